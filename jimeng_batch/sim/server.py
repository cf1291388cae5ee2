"""Running the simulator: in a background thread for tests and ``--sim`` runs, or in the foreground for the CLI.

The socket is bound before uvicorn starts so that port 0 gives an ephemeral port whose number is known at once.
Uvicorn's access log is off by default (the cookie carries a session token; nothing that could echo it is logged).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from jimeng_batch.sim.app import build_app
from jimeng_batch.sim.clock import Clock, system_clock
from jimeng_batch.sim.config import SimConfig
from jimeng_batch.sim.journal import Journal
from jimeng_batch.sim.state import SimState, Sleep
from jimeng_batch.sim.uvicorn_compat import FastStopServer, quiet_dropped_answers

__all__ = ["SimServer", "running_simulator", "serve_forever"]

_STARTUP_TIMEOUT_S = 10.0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio only disables Nagle (TCP_NODELAY) on sockets whose proto is IPPROTO_TCP, and
    # without it every response written in two parts waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_config(state: SimState) -> uvicorn.Config:
    quiet_dropped_answers()
    return uvicorn.Config(
        build_app(state),
        log_config=None,
        log_level=logging.WARNING,
        access_log=state.config.access_log,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=2,
        backlog=2048,
    )


class SimServer:
    """A simulator serving on a background thread. Use :func:`running_simulator` rather than this directly."""

    def __init__(self, state: SimState, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state
        self._socket = _bind(host, port)
        self.base_url = _base_url(self._socket)
        self._server = FastStopServer(_uvicorn_config(state))
        self._thread = threading.Thread(target=self._run, name="jimeng-sim", daemon=True)
        self._error: BaseException | None = None

    @property
    def host_port(self) -> str:
        """``host:port`` without a scheme (the form ImageX's UploadHosts use)."""
        return self.base_url.removeprefix("http://")

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread instead of dying silently
            self._error = exc

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError("the simulator failed to start") from self._error
            if time.monotonic() > deadline:
                raise RuntimeError("the simulator did not start in time")
            time.sleep(0.002)

    def stop(self) -> None:
        self._server.request_stop()
        self._thread.join(timeout=_STARTUP_TIMEOUT_S)
        self._socket.close()

    def stats(self) -> dict[str, Any]:
        """The same snapshot as ``GET /_sim/stats``."""
        return self.state.stats()


@contextmanager
def running_simulator(
    config: SimConfig | None = None,
    *,
    clock: Clock = system_clock,
    sleep: Sleep | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    state_path: Path | None = None,
) -> Iterator[SimServer]:
    """Serve a simulator on ``host:port`` (port 0: an ephemeral one) for the duration of the ``with`` block.

    ``clock`` drives record timing and URL expiry (tests pass a FakeClock); ``sleep`` replaces the asyncio sleep
    used for submit/poll latency (tests pass a recorder so nothing waits). With ``state_path`` the simulator keeps
    its accounts and records in that file and finds them there again when started anew (see ``journal.py``).
    """
    config = config or SimConfig()
    kwargs: dict[str, Any] = {"clock": clock}
    if sleep is not None:
        kwargs["sleep"] = sleep
    journal = Journal(state_path, config.seed) if state_path is not None else None
    try:
        server = SimServer(SimState(config, journal=journal, **kwargs), host, port)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        if journal is not None:
            journal.close()


def serve_forever(config: SimConfig, host: str, port: int, announce: Any = print,
                  state_path: Path | None = None) -> None:
    """Serve in the foreground until interrupted; ``announce`` gets the base URL first, before anything else."""
    state = SimState(config, journal=Journal(state_path, config.seed) if state_path is not None else None)
    sock = _bind(host, port)
    announce(_base_url(sock))
    server = uvicorn.Server(_uvicorn_config(state))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
