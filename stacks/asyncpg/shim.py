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


class ResolvingLoop(asyncio.SelectorEventLoop):
    """Connects to the attempt's hostaddr for a host; TLS still names the host."""

    async def create_connection(self, protocol_factory, host=None, port=None, **kw):
        address = _addresses.get().get(host)
        if address is not None and kw.get("sock") is None:
            if kw.get("ssl") and kw.get("server_hostname") is None:
                kw["server_hostname"] = host  # what asyncio would have used
            host = address
        return await super().create_connection(protocol_factory, host, port, **kw)


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


def failed(e, params=()):
    """asyncpg's exception as its users see it: the type and str(e)."""
    code = getattr(e, "sqlstate", None) or type(e).__name__
    reply = {"message": "%s: %s" % (type(e).__name__, str(e) or repr(e)), "code": code}
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
