"""A hostile HTTP server for tests: not the simulator (whose job is to be faithful), but a small server on 127.0.0.1
whose answer to each request is whatever the test says, down to the bytes and their timing.

A test gives a handler ``(method, path, body) -> list of steps``; a step is ``bytes`` (sent), a ``Pause(seconds)``,
or ``HANG`` (wait until the client gives up). By default (the ``service`` helpers) it accepts submits, answers polls
with a finished record and serves a small PNG, so a run gets to whatever step the test makes misbehave.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PIL import Image

Step = bytes | float | None  # bytes to send, seconds to wait, None: hang until the client goes away
Handler = Callable[[str, str, bytes], list[Step]]
HANG: Step = None


def answer(body: bytes, status: int = 200, headers: dict[str, str] | None = None, *,
           length: int | None = None) -> bytes:
    """A whole HTTP/1.1 response (``length`` overrides the Content-Length it announces)."""
    reason = {200: "OK", 302: "Found", 404: "Not Found", 500: "Server Error"}.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body) if length is None else length}",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def json_answer(payload: Any, status: int = 200) -> list[Step]:
    return [answer(json.dumps(payload).encode(), status, {"Content-Type": "application/json"})]


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "#336699").save(buffer, "PNG")
    return buffer.getvalue()


PNG = png()


@dataclass
class Hostile:
    """The running server: its base URL, and every request it got."""

    base_url: str
    requests: list[tuple[str, str]]

    def count(self, path_part: str) -> int:
        return sum(1 for _, path in self.requests if path_part in path)


def accepted(history_id: str = "7000000000001") -> list[Step]:
    return json_answer({"ret": "0", "data": {"aigc_data": {"history_record_id": history_id, "task_id": "t1"}}})


def finished(base_url: str, history_id: str = "7000000000001") -> dict[str, Any]:
    """A finished image record whose one file is at ``/asset/1.png``."""
    url = f"{base_url}/asset/1.png"
    return {"history_record_id": history_id, "status": 50, "total_image_count": 1, "finished_image_count": 1,
            "task": {"finish_time": 1700000000},
            "item_list": [{"image": {"large_images": [{"image_url": url, "width": 64, "height": 64,
                                                         "format": "png"}]}}]}


def service(base_url_box: list[str], *, submit: Handler | None = None, poll: Handler | None = None,
            asset: Handler | None = None, credit: Handler | None = None) -> Handler:
    """A handler that behaves like the service except where the test replaces a part."""

    def handle(method: str, path: str, body: bytes) -> list[Step]:
        if path.startswith("/mweb/v1/aigc_draft/generate"):
            return submit(method, path, body) if submit else accepted()
        if path.startswith("/mweb/v1/get_history_by_ids"):
            if poll:
                return poll(method, path, body)
            ids = json.loads(body or b"{}").get("history_ids") or json.loads(body or b"{}").get("submit_ids") or []
            return json_answer({"ret": "0", "data": {i: finished(base_url_box[0], i) for i in ids}})
        if path.startswith("/commerce/v1/benefits/user_credit"):
            return credit(method, path, body) if credit else json_answer(
                {"ret": "0", "data": {"credit": {"purchase_credit": 1000}}})
        if path.startswith("/asset/"):
            return asset(method, path, body) if asset else [answer(PNG, headers={"Content-Type": "image/png"})]
        return [answer(b"not here", 404)]

    return handle


def bad_gzip(status: int = 200) -> list[Step]:
    return [answer(b"this is not gzip at all", status, {"Content-Encoding": "gzip",
                                                       "Content-Type": "application/json"})]


def trickle(body: bytes, every: float) -> list[Step]:
    """The headers at once, then the body one byte every ``every`` seconds."""
    steps: list[Step] = [answer(b"", headers={"Content-Type": "application/octet-stream"}, length=len(body))]
    for byte in body:
        steps += [every, bytes([byte])]
    return steps


def flood(size: int, chunk: int = 1 << 20) -> list[Step]:
    """An answer announcing ``size`` bytes, and sending them (zeros) as fast as the client reads."""
    steps: list[Step] = [answer(b"", headers={"Content-Type": "application/json"}, length=size)]
    sent = 0
    while sent < size:
        steps.append(bytes(min(chunk, size - sent)))
        sent += chunk
    return steps


def gzipped(payload: Any) -> list[Step]:
    return [answer(gzip.compress(json.dumps(payload).encode()), 200, {"Content-Encoding": "gzip"})]


@contextmanager
def hostile(make_handler: Callable[[list[str]], Handler]) -> Iterator[Hostile]:
    """Serve ``make_handler(base_url_box)`` on an ephemeral port in a background thread."""
    loop = asyncio.new_event_loop()
    box: list[str] = [""]
    handler = make_handler(box)
    requests: list[tuple[str, str]] = []
    ready = threading.Event()
    stop = asyncio.Event()
    clients: set[asyncio.Task[None]] = set()

    async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                requests.append((method, path))
                for step in handler(method, path, body):
                    if step is None:
                        await stop.wait()
                        return
                    if isinstance(step, float | int):
                        await asyncio.sleep(step)
                        continue
                    writer.write(step)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()

    def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = loop.create_task(serve_one(reader, writer))
        clients.add(task)
        task.add_done_callback(clients.discard)

    async def main() -> None:
        server = await asyncio.start_server(track, "127.0.0.1", 0)
        box[0] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        ready.set()
        async with server:
            await stop.wait()
            for task in list(clients):
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield Hostile(box[0], requests)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
