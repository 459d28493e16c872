"""What the loopback fakes (Azure, the Hub) share: reading a request body as http.server leaves it."""

from __future__ import annotations


def read_body(handler) -> bytes:
    """The request body of a BaseHTTPRequestHandler: chunked (as httpx and requests stream uploads)
    or sized by Content-Length."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = b""
        while True:
            size = int(handler.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                handler.rfile.readline()
                return out
            out += handler.rfile.read(size)
            handler.rfile.readline()
    n = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(n) if n else b""
