"""How many submit+poll requests per second the simulator serves at zero latency, on one core.

The server runs in its own process pinned to one CPU; load comes from separate client processes (pinned to the
other CPUs when there are any) speaking raw HTTP/1.1 over keep-alive connections, because an httpx client is
slower than the server and would measure itself. Each connection loops: submit a new job, poll it by its
history_record_id. The figure is requests (submits + polls) answered per second, all of them checked to be
``ret "0"``.

    python bench/bench_sim.py [--seconds 10] [--clients 2] [--connections 16] [--server-cpu 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.signing import web_sign
from jimeng_batch.sim.config import SimConfig

DRAFT = Path(__file__).resolve().parents[1] / "tests" / "data" / "document" / "image_draft.json"
GENERATE = "/mweb/v1/aigc_draft/generate"
HISTORY = "/mweb/v1/get_history_by_ids"


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _serve(port_queue: mp.Queue, cpu: int | None) -> None:  # type: ignore[type-arg]
    _pin(cpu)
    from jimeng_batch.sim.server import serve_forever

    config = replace(SimConfig(), default_credits=10**12, max_in_flight=None)
    serve_forever(config, "127.0.0.1", 0, announce=port_queue.put)


def _request(host: str, method: str, path: str, query: str, token: str, body: bytes) -> bytes:
    device_time = str(int(time.time()))
    sign = web_sign(path, platform="7", app_version="8.4.0", device_time=device_time)
    head = (
        f"{method} {path}?{query} HTTP/1.1\r\nHost: {host}\r\nAppvr: 8.4.0\r\nPf: 7\r\nDevice-Time: {device_time}\r\n"
        f"Sign: {sign}\r\nSign-Ver: 1\r\nTdid: \r\nCookie: sessionid={token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> dict:  # type: ignore[type-arg]
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    status = int(head.split(b" ", 2)[1])
    body = await reader.readexactly(length)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
    answer = json.loads(body)
    if answer.get("ret") != "0":
        raise RuntimeError(f"ret {answer.get('ret')}: {answer.get('errmsg')}")
    return answer  # type: ignore[no-any-return]


async def _connection(host: str, port: int, worker: int, conn: int, deadline: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    token = f"bench{worker:03d}{conn:03d}" + "x" * 20
    query = "aid=513695&device_platform=web&region=cn&da_version=3.3.9&os=windows&web_version=7.5.0"
    draft = json.loads(DRAFT.read_text(encoding="utf-8"))
    draft["component_list"][0]["abilities"]["generate"]["core_param"]["large_image_info"].update(
        {"width": 1024, "height": 1024, "resolution_type": "1k"}
    )
    draft_text = json.dumps(draft)
    i = 0
    while time.monotonic() < deadline:
        i += 1
        envelope = {
            "extend": {"root_model": "high_aes_general_v40", "template_id": ""},
            "submit_id": f"b-{worker}-{conn}-{i}", "metrics_extra": "{}", "draft_content": draft_text,
            "http_common_info": {"aid": catalog.REGIONS["cn"].aid},
        }
        writer.write(_request(f"{host}:{port}", "POST", GENERATE, query, token, json.dumps(envelope).encode()))
        answer = await _read_response(reader)
        history_id = answer["data"]["aigc_data"]["history_record_id"]
        writer.write(_request(f"{host}:{port}", "POST", HISTORY, query, token,
                              json.dumps({"history_ids": [history_id]}).encode()))
        polled = await _read_response(reader)
        if polled["data"][history_id]["status"] != 50:
            raise RuntimeError("the job did not finish at zero latency")
        counts[0] += 2
    writer.close()
    await writer.wait_closed()


def _client(port: int, worker: int, connections: int, seconds: float, cpu: int | None, out: mp.Queue) -> None:  # type: ignore[type-arg]
    _pin(cpu)

    async def run() -> int:
        counts = [0]
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_connection("127.0.0.1", port, worker, c, deadline, counts) for c in range(connections)))
        return counts[0]

    out.put(asyncio.run(run()))


def _cpu_seconds(pid: int | None) -> float:
    """User+system CPU seconds a process has used so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections per client process")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to (-1: not pinned)")
    args = parser.parse_args()

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = args.server_cpu if args.server_cpu >= 0 else None
    client_cpus = [c for c in cpus if c != server_cpu] or [None]

    ctx = mp.get_context("spawn")
    ports: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    server = ctx.Process(target=_serve, args=(ports, server_cpu), daemon=True)
    server.start()
    base_url = ports.get(timeout=30)
    port = int(base_url.rsplit(":", 1)[1])
    for _ in range(100):  # the socket is bound before uvicorn starts accepting; wait until it answers
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)

    results: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    clients = [
        ctx.Process(target=_client, args=(port, w, args.connections, args.seconds,
                                          client_cpus[w % len(client_cpus)], results))
        for w in range(args.clients)
    ]
    started = time.monotonic()
    cpu_before = _cpu_seconds(server.pid)
    for process in clients:
        process.start()
    total = sum(results.get(timeout=args.seconds + 60) for _ in clients)
    elapsed = time.monotonic() - started
    server_cpu_used = _cpu_seconds(server.pid) - cpu_before
    for process in clients:
        process.join()
    server.terminate()
    server.join()

    rate = total / args.seconds
    busy = server_cpu_used / elapsed if elapsed else 0.0
    print(f"machine: nproc={os.cpu_count()} cpu={_cpu_model()!r} python={platform.python_version()}")
    print(f"server pinned to CPU {server_cpu}; {args.clients} client processes on CPUs "
          f"{sorted({c for c in client_cpus if c is not None}) or 'any'}, {args.connections} connections each")
    print(f"{total} requests (submit+poll pairs: {total // 2}) in {args.seconds:.1f}s "
          f"(wall {elapsed:.1f}s incl. process start)")
    print(f"throughput: {rate:,.0f} requests/s ({rate / 2:,.0f} submit+poll pairs/s)")
    print(f"server CPU busy: {busy:.0%} of one core over the run (below ~95%: the clients, not the server, "
          f"set the pace, and the server's capacity is higher)")


if __name__ == "__main__":
    main()
