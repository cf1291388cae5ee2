"""Recording fronts for runs over real HTTP on 127.0.0.1: a front of a simulator that records every request it
passes on (so a test sees what reached which host, with which cookie, query and headers), and the same server as a
forwarding proxy (so a test sees which calls went through a token's proxy)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx


@dataclass(frozen=True)
class Seen:
    method: str
    url: str  # as the request line gave it: absolute through a proxy, a path in front of a host
    headers: dict[str, str]

    @property
    def query(self) -> dict[str, str]:
        return {name: values[0] for name, values in parse_qs(urlsplit(self.url).query).items()}

    @property
    def cookie(self) -> str:
        return self.headers.get("cookie", "")

    def session(self) -> str | None:
        for part in self.cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == "sessionid":
                return value
        return None


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer",
               "transfer-encoding", "upgrade", "content-length", "accept-encoding"}


@contextmanager
def recording_front(upstream: str | None = None, *, via: str = "", refuse: int | None = None,
                    ) -> Iterator[tuple[str, list[Seen]]]:
    """A plain-HTTP server on 127.0.0.1 that records every request and passes it on: to the absolute URL of its
    request line (a forwarding proxy, as httpx speaks to one: ``POST http://127.0.0.1:PORT/path HTTP/1.1``), or to
    ``upstream`` (a front of that host, keeping the Host header, so the simulator's asset URLs name the front).
    With ``refuse``, it answers every request with that status instead (a proxy refusing its credentials: 407)."""
    seen: list[Seen] = []
    onward = httpx.Client(trust_env=False, timeout=10)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _pass(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            seen.append(Seen(self.command, self.path, headers))
            if refuse is not None:
                self.send_response(refuse)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            target = self.path if self.path.startswith("http://") else f"{upstream}{self.path}"
            forwarded = {name: value for name, value in headers.items() if name not in _HOP_BY_HOP}
            if via:
                forwarded["via"] = via
            answer = onward.request(self.command, target, headers=forwarded, content=body)
            self.send_response(answer.status_code)
            for name, value in answer.headers.multi_items():
                if name.lower() not in _HOP_BY_HOP | {"content-encoding"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = _pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        onward.close()


def files_holding(folder: Path, secret: str) -> list[str]:
    """The files under ``folder`` that hold ``secret`` (as UTF-8 or UTF-16 bytes)."""
    forms = (secret.encode(), secret.encode("utf-16-le"))
    return [str(p) for p in folder.rglob("*") if p.is_file() and any(f in p.read_bytes() for f in forms)]
