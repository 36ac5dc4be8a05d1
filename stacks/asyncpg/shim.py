"""pgssl's attempt-protocol shim for asyncpg (docs/adding-a-stack.md).

One process, one asyncio event loop, every attempt a task on it (asyncpg is asyncio-only).
Options reach asyncpg as a DSN, `postgresql://user:password@/dbname?host=...&sslmode=...`,
as an asyncpg user passes libpq-style options; asyncpg reads the keywords it knows and sends
every other query parameter to the server as a setting (its documented DSN behaviour).

Two request keywords are the harness's, not the case's wording: `hostaddr` and
`connect_timeout`. asyncpg has no hostaddr; the harness uses it as its name service
(certificates name hosts such as common-name.pg-ssltest.test that resolve nowhere), so the
event loop's create_connection connects to the hostaddr while asyncpg keeps the host for SNI
and the certificate check, as an /etc/hosts entry would. connect_timeout becomes asyncpg's
`timeout` argument (its connect deadline).
"""

import asyncio
import contextvars
import json
import os
import socket
import ssl
import sys
import urllib.parse

import asyncpg

PROTOCOL = 1

# The protocol gets private copies of stdin and stdout; fd 0 and 1 become /dev/null and
# stderr, so nothing OpenSSL does (a passphrase prompt falls back to stdin) touches them.
_proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
_proto_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
os.dup2(2, 1)

# host -> address for the attempt running in this task (tasks copy the context).
_addresses = contextvars.ContextVar("addresses", default={})


def send(message):
    _proto_out.write(json.dumps(message, separators=(",", ":")) + "\n")
    _proto_out.flush()


class LastWordsSocket(socket.socket):
    """A socket that lets the server's last words through. When the server refuses the client
    certificate it sends an alert and closes; under TLS 1.3 that comes after the client's
    handshake, while asyncpg writes its startup packet. That write then fails with a reset or
    a broken pipe, a matter of timing, and asyncio drops the connection without reading the
    alert. Here a failed write is held back until reading shows nothing more is coming, so
    OpenSSL sees the alert, as libpq does (it reads before it reports a failed write) and as
    the harness's own stacks do (harness/src/client/last_words.rs)."""

    write_error = None

    def send(self, data, *flags):
        if self.write_error is not None:
            return len(data)
        try:
            return super().send(data, *flags)
        except (ConnectionResetError, BrokenPipeError) as e:
            self.write_error = e
            return len(data)

    def recv_into(self, buffer, *args):
        try:
            n = super().recv_into(buffer, *args)
        except ConnectionResetError:
            if self.write_error is None:
                raise
            n = 0
        if n == 0 and self.write_error is not None:
            raise self.write_error
        return n

    def recv(self, size, *flags):
        buffer = bytearray(size)
        n = self.recv_into(buffer, size, *flags)
        return bytes(buffer[:n])


class ResolvingLoop(asyncio.SelectorEventLoop):
    """Connects to the attempt's hostaddr for a host; TLS still names the host."""

    async def create_connection(self, protocol_factory, host=None, port=None, **kw):
        address = _addresses.get().get(host)
        if address is not None and kw.get("sock") is None:
            if kw.get("ssl") and kw.get("server_hostname") is None:
                kw["server_hostname"] = host  # what asyncio would have used
            host = address
        if kw.get("sock") is None and host is not None and not kw.get("local_addr"):
            kw["sock"] = await self._last_words_socket(host, port)
            host = port = None
        return await super().create_connection(protocol_factory, host, port, **kw)

    async def _last_words_socket(self, host, port):
        infos = await self.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error = None
        for family, type_, proto, _, address in infos:
            sock = LastWordsSocket(family, type_, proto)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, address)
                return sock
            except OSError as e:
                sock.close()
                error = e
        raise error or OSError("no address for %s" % host)


def split_request(params):
    """The DSN, the host -> hostaddr map, and asyncpg's timeout from libpq keywords."""
    params = dict(params)
    hosts = params.get("host", "").split(",")
    addrs = params.pop("hostaddr", "").split(",")
    addrs = [a for a in addrs if a]
    # One address per host (the harness's single default, or a case's list of as many).
    if len(addrs) == len(hosts):
        addresses = dict(zip(hosts, addrs))
    elif len(addrs) == 1:
        addresses = {h: addrs[0] for h in hosts}
    else:
        addresses = None if addrs else {}
    timeout = float(params.pop("connect_timeout", "60"))
    user = urllib.parse.quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    auth = user + (":" + urllib.parse.quote(password, safe="") if password is not None else "")
    dbname = urllib.parse.quote(params.pop("dbname", ""), safe="")
    # Hosts go where a URL has them (IPv6 in brackets), each with the port; a socket
    # directory cannot be a URL host, so it goes in the query, as asyncpg documents.
    netloc = ""
    if not params.get("host", "").startswith("/"):
        port = params.pop("port", "")
        netloc = ",".join(
            ("[%s]" % h if ":" in h else h) + (":" + port if port else "")
            for h in params.pop("host", "").split(",")
        )
    query = urllib.parse.urlencode(list(params.items()))
    return "postgresql://%s@%s/%s?%s" % (auth, netloc, dbname, query), addresses, timeout


async def attempt(request):
    dsn, addresses, timeout = split_request(request["params"])
    if addresses is None:
        return {
            "failed": {
                "message": "asyncpg has no hostaddr option: a host list with its own address list cannot be expressed",
                "class": "unsupported",
            }
        }
    _addresses.set(addresses)
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except Exception as e:
        return failed(e, request["params"])
    try:
        row = await conn.fetchrow(request["session_query"])
        obj = conn._transport.get_extra_info("ssl_object")
        return {
            "connected": {
                "encrypted": obj is not None,
                "tls_version": obj.version() if obj else "",
                "cipher": obj.cipher()[0] if obj else "",
                "columns": ["" if v is None else str(v) for v in (row or ())],
            }
        }
    except Exception as e:
        return failed(e)
    finally:
        conn.terminate()


# Which class a file keyword's missing file means (FileNotFoundError names no file).
MISSING_FILE_CLASS = {
    "sslrootcert": "root_cert_missing",
    "sslcert": "client_key_invalid",
    "sslkey": "client_key_invalid",
    "sslcrl": "invalid_option",
}


def described(e):
    return "%s: %s" % (type(e).__name__, str(e) or repr(e))


def failed(e, params=()):
    """asyncpg's exception as its users see it in a traceback: the type and str(e), then the
    exceptions it was raised while handling. asyncpg words a connection the server ended as
    "connection was closed in the middle of operation"; why (the server's TLS alert, an
    SSLError) is the exception before it."""
    code = getattr(e, "sqlstate", None) or type(e).__name__
    message = described(e)
    seen = {id(e)}
    cause = e.__cause__ or e.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        message += " (while handling %s)" % described(cause)
        cause = cause.__cause__ or cause.__context__
    reply = {"message": message, "code": code}
    if isinstance(e, FileNotFoundError) and e.filename is None:
        # ssl's load_* raise it without the path: the one file keyword whose file is absent.
        missing = [k for k, v in params if k in MISSING_FILE_CLASS and not os.path.exists(v)]
        if len(missing) == 1:
            reply["class"] = MISSING_FILE_CLASS[missing[0]]
    return {"failed": reply}


async def serve(request):
    try:
        result = await attempt(request)
    except Exception as e:  # a bug in the shim: say so, as an unclassified failure
        result = {"failed": {"message": "shim: %s: %s" % (type(e).__name__, e)}}
    send({"type": "reply", "id": request["id"], "result": result})


async def main():
    loop = asyncio.get_running_loop()
    send(
        {
            "type": "hello",
            "protocol": PROTOCOL,
            "name": "asyncpg",
            "version": asyncpg.__version__,
            "tls_library": "openssl",
            # "OpenSSL 3.0.17 1 Jul 2025": the libssl Python's ssl module is linked with.
            "tls_version": ssl.OPENSSL_VERSION.split()[1],
            "options": [],
        }
    )
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), _proto_in)
    tasks = set()
    while line := await reader.readline():
        request = json.loads(line)
        if request.get("type") == "request":
            task = asyncio.ensure_future(serve(request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    loop = ResolvingLoop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(main())
