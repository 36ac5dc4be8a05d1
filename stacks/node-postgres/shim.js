// pgssl's attempt-protocol shim for node-postgres (`pg`; docs/adding-a-stack.md).
//
// usage: node shim.js NODE_MODULES [--libpq-compat]
// One process, every attempt a promise on Node's event loop. Options reach pg as a connection
// string, `postgresql://user:password@host:port/dbname?sslmode=...`, parsed by pg's own
// pg-connection-string, as a pg user passes libpq-style options; with --libpq-compat the string
// also carries `uselibpqcompat=true`, pg-connection-string's switch to libpq's sslmode meanings.
//
// `hostaddr` is the harness's name service, not a pg option (pg has none): certificates name
// hosts such as common-name.pg-ssltest.test that resolve nowhere, so the socket pg gets through
// its documented `stream` option connects to the hostaddr, while pg keeps the host for SNI and
// the certificate check, as an /etc/hosts entry would.
'use strict'

const net = require('net')
const path = require('path')
const readline = require('readline')
const tls = require('tls')

const modules = path.resolve(process.argv[2])
const libpqCompat = process.argv.includes('--libpq-compat')
const pg = require(require.resolve('pg', { paths: [modules] }))
const pgVersion = require(require.resolve('pg/package.json', { paths: [modules] })).version

const PROTOCOL = 1

// Protocol lines go to fd 1; the driver never writes there (it logs warnings to stderr).
function send(message) {
  process.stdout.write(JSON.stringify(message) + '\n')
}

function connectionString(params) {
  const p = new Map(params)
  const user = encodeURIComponent(p.get('user') || '')
  const password = p.has('password') ? ':' + encodeURIComponent(p.get('password')) : ''
  const dbname = encodeURIComponent(p.get('dbname') || '')
  p.delete('user')
  p.delete('password')
  p.delete('dbname')
  let netloc = ''
  // A socket directory cannot be a URL host: it goes in the query, as pg documents.
  if (!(p.get('host') || '').startsWith('/')) {
    const host = p.get('host') || ''
    netloc = (host.includes(':') ? '[' + host + ']' : host) + (p.has('port') ? ':' + p.get('port') : '')
    p.delete('host')
    p.delete('port')
  }
  const query = new URLSearchParams([...p.entries()])
  if (libpqCompat) query.append('uselibpqcompat', 'true')
  return `postgresql://${user}${password}@${netloc}/${dbname}?${query}`
}

async function attempt(request) {
  const params = request.params.filter(([k]) => k !== 'hostaddr')
  const hosts = (new Map(request.params).get('host') || '').split(',')
  const addrs = (new Map(request.params).get('hostaddr') || '').split(',').filter((a) => a)
  if (addrs.length > 1 || hosts.length > 1) {
    return {
      failed: {
        message: 'node-postgres takes one host (no host list, no hostaddr)',
        class: 'unsupported',
      },
    }
  }
  let connectionStringText
  const config = {}
  try {
    connectionStringText = connectionString(params)
  } catch (e) {
    return failed(e, params)
  }
  config.connectionString = connectionStringText
  if (addrs.length === 1) {
    config.stream = () => {
      const socket = new net.Socket()
      const connect = socket.connect.bind(socket)
      socket.connect = (port, _host) => connect(port, addrs[0])
      return socket
    }
  }
  let client
  try {
    client = new pg.Client(config)
    // An error after the attempt (the server shutting down between cases) is no reply's:
    // pg emits it on the idle client, which must have a listener, as pg's docs say.
    client.on('error', () => {})
    await client.connect()
  } catch (e) {
    if (client) client.end().catch(() => {})
    return failed(e, params)
  }
  try {
    const result = await client.query({ text: request.session_query, rowMode: 'array' })
    const stream = client.connection.stream
    const encrypted = stream instanceof tls.TLSSocket
    const row = result.rows[0] || []
    return {
      connected: {
        encrypted,
        tls_version: encrypted ? stream.getProtocol() || '' : '',
        cipher: encrypted ? (stream.getCipher() || {}).standardName || '' : '',
        columns: row.map((v) => (v === null ? '' : typeof v === 'boolean' ? String(v) : String(v))),
      },
    }
  } catch (e) {
    return failed(e)
  } finally {
    client.end().catch(() => {})
  }
}

// Which class a file keyword's missing file means (pg-connection-string reads them itself).
const MISSING_FILE_CLASS = {
  sslrootcert: 'root_cert_missing',
  sslcert: 'client_key_invalid',
  sslkey: 'client_key_invalid',
}

// pg's error as its users see it: message, and the code (a SQLSTATE, or Node's error code).
function failed(e, params = []) {
  const reply = { message: `${e.name || 'Error'}: ${e.message}` }
  if (e.code) reply.code = String(e.code)
  if (e.code === 'ENOENT') {
    const keyword = params.find(([k, v]) => k in MISSING_FILE_CLASS && v === e.path)
    if (keyword) reply.class = MISSING_FILE_CLASS[keyword[0]]
  }
  return { failed: reply }
}

async function serve(request) {
  let result
  try {
    result = await attempt(request)
  } catch (e) {
    result = { failed: { message: `shim: ${e && e.stack}` } }
  }
  send({ type: 'reply', id: request.id, result })
}

send({
  type: 'hello',
  protocol: PROTOCOL,
  name: libpqCompat ? 'node-postgres-libpq-compat' : 'node-postgres',
  version: pgVersion,
  tls_library: 'openssl',
  tls_version: process.versions.openssl,
  options: [],
})
// Node's bundled OpenSSL version can carry a suffix ("3.0.15+quic"); the hello keeps it.
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const request = JSON.parse(line)
  if (request.type === 'request') serve(request)
})
