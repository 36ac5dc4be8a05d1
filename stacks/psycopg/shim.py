"""pgssl's attempt-protocol shim for psycopg 3 (docs/adding-a-stack.md).

One process serves many attempts: a thread per request, replies written whole, one line each,
in whatever order the attempts end. Options reach psycopg as a conninfo string, as a psycopg
user would pass them. Used by stacks/psycopg (Debian's psycopg over the system libpq) and
stacks/psycopg-binary (psycopg[binary], its own libpq and OpenSSL).
"""

import ctypes
import json
import os
import sys
import threading

import psycopg
from psycopg.conninfo import make_conninfo

PROTOCOL = 1

# The protocol gets private copies of stdin and stdout; fd 0 and 1 become /dev/null and
# stderr, so nothing the driver or OpenSSL does (a passphrase prompt falls back to stdin when
# there is no terminal) can read a request or write into a reply.
_proto_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
_proto_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
os.dup2(2, 1)
_out_lock = threading.Lock()


def send(message):
    line = json.dumps(message, separators=(",", ":"))
    with _out_lock:
        _proto_out.write(line + "\n")
        _proto_out.flush()


def mapped(prefix, directory=None):
    """Path of the first mapped library whose file name starts with `prefix` (in `directory`)."""
    with open("/proc/self/maps") as maps:
        for entry in maps:
            path = entry.split()[-1]
            if os.path.basename(path).startswith(prefix) and (
                directory is None or os.path.dirname(path) == directory
            ):
                return path
    return None


def version_text(number):
    """libpq's PQlibVersion number as PostgreSQL writes versions: 150018 -> 15.18."""
    if number >= 100000:
        return "%d.%d" % (number // 10000, number % 10000)
    return "%d.%d.%d" % (number // 10000, number // 100 % 100, number % 100)


# The libpq psycopg loaded (the system one, or the wheel's bundled copy) and its OpenSSL.
_libpq_path = mapped("libpq")
_libpq = ctypes.CDLL(_libpq_path)
_libpq.PQsslAttribute.restype = ctypes.c_char_p
_libpq.PQsslAttribute.argtypes = [ctypes.c_void_p, ctypes.c_char_p]


def ssl_attribute(conn, name):
    value = _libpq.PQsslAttribute(conn, name.encode())
    return value.decode() if value else ""


def openssl_version():
    # The one next to libpq: Python's own ssl module may have mapped another.
    path = mapped("libssl", os.path.dirname(_libpq_path))
    if not path:
        return ""
    lib = ctypes.CDLL(path)
    lib.OpenSSL_version.restype = ctypes.c_char_p
    lib.OpenSSL_version.argtypes = [ctypes.c_int]
    # "OpenSSL 3.0.17 1 Jul 2025"
    return lib.OpenSSL_version(0).decode().split()[1]


# OpenSSL 3.0 decodes an RSA-PSS public key wrongly when two threads are the first to decode
# one at once (a race in its first use of the decoder). Attempts run in threads, so the first
# attempt with a PKI directory decodes its certificates alone, in libpq's own libcrypto, while
# the others wait.
_primed = set()
_prime_lock = threading.Lock()


def _libcrypto():
    path = mapped("libcrypto", os.path.dirname(_libpq_path))
    if not path:
        return None
    lib = ctypes.CDLL(path)
    lib.BIO_new_mem_buf.restype = ctypes.c_void_p
    lib.BIO_new_mem_buf.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.PEM_read_bio_X509.restype = ctypes.c_void_p
    lib.PEM_read_bio_X509.argtypes = [ctypes.c_void_p] + [ctypes.c_void_p] * 3
    lib.X509_free.argtypes = [ctypes.c_void_p]
    lib.BIO_free.argtypes = [ctypes.c_void_p]
    return lib


def prime(directory):
    with _prime_lock:
        if directory in _primed:
            return
        _primed.add(directory)
        lib = _libcrypto()
        if lib is None:
            return
        for name in sorted(os.listdir(directory)):
            if not name.endswith((".crt", ".pem")):
                continue
            with open(os.path.join(directory, name), "rb") as f:
                pem = f.read()
            bio = lib.BIO_new_mem_buf(pem, len(pem))
            while True:
                cert = lib.PEM_read_bio_X509(bio, None, None, None)
                if not cert:
                    break
                lib.X509_free(cert)
            lib.BIO_free(bio)
        # The last read left "no start line" in this thread's error queue, which libpq
        # would otherwise report as this thread's next SSL error.
        lib.ERR_clear_error()


def attempt(request):
    try:
        conninfo = make_conninfo("", **dict(request["params"]))
        with psycopg.connect(conninfo, autocommit=True) as conn:
            ptr = conn.pgconn.pgconn_ptr
            encrypted = bool(conn.pgconn.ssl_in_use)
            with conn.cursor() as cur:
                cur.execute(request["session_query"])
                row = cur.fetchone()
            return {
                "connected": {
                    "encrypted": encrypted,
                    "tls_version": ssl_attribute(ptr, "protocol") if encrypted else "",
                    "cipher": ssl_attribute(ptr, "cipher") if encrypted else "",
                    "columns": ["" if v is None else str(v) for v in (row or ())],
                }
            }
    except psycopg.Error as e:
        return {"failed": {"message": str(e), "code": e.sqlstate or type(e).__name__}}


def serve(request):
    try:
        if request.get("pki_dir"):
            prime(request["pki_dir"])
        result = attempt(request)
    except Exception as e:  # a bug in the shim: say so, as an unclassified failure
        result = {"failed": {"message": "shim: %s: %s" % (type(e).__name__, e)}}
    send({"type": "reply", "id": request["id"], "result": result})


def main():
    send(
        {
            "type": "hello",
            "protocol": PROTOCOL,
            "name": "psycopg",
            "version": psycopg.__version__ + " (" + psycopg.pq.__impl__ + ")",
            "tls_library": (ssl_attribute(None, "library") or "OpenSSL").lower(),
            "tls_version": openssl_version(),
            "libpq_version": version_text(psycopg.pq.version()),
            "options": [o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults()],
        }
    )
    for line in _proto_in:
        request = json.loads(line)
        if request.get("type") == "request":
            threading.Thread(target=serve, args=(request,), daemon=True).start()


if __name__ == "__main__":
    main()
