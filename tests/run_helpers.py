"""Running manifests against the simulator in tests: a real HTTP server on 127.0.0.1, no waiting.

``drive`` builds the executor through the runner's own wiring (``connected_executor``), with a sleep that waits for
nothing, and lets a test watch state changes; the command line is run in-process by ``conftest.run_main``.
"""

from __future__ import annotations

import asyncio
import hashlib
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jimeng_batch.engine.cache import ResultCache
from jimeng_batch.engine.clients import BaseURL
from jimeng_batch.engine.config import RunConfig
from jimeng_batch.engine.executor import Executor
from jimeng_batch.engine.ledger import Ledger
from jimeng_batch.engine.result import RunResult, exit_code
from jimeng_batch.engine.runner import connected_executor
from jimeng_batch.engine.settle import settle
from jimeng_batch.engine.states import State
from jimeng_batch.intake.manifest import load_manifest
from jimeng_batch.intake.plan import iter_distinct
from jimeng_batch.protocol.request_spec import RequestSpec
from jimeng_batch.protocol.tokens import Token
from jimeng_batch.sim import SimServer, config_from_mapping, running_simulator

TOKEN = "tokA0123456789abcdef0123456789ab"
TOKEN_B = "tokB0123456789abcdef0123456789ab"


@contextmanager
def simulator(*, clock: Callable[[], float] | None = None, **config: Any) -> Iterator[SimServer]:
    """A simulator with one image per request (small, fast tests) unless the test says otherwise."""
    config.setdefault("images_per_request", 1)
    with running_simulator(config_from_mapping(config), **({"clock": clock} if clock else {})) as server:
        yield server


class NoWait:
    """A sleep that records what it was asked to wait and only yields to the event loop (and, with ``advance``,
    moves a fake clock on by that much instead of waiting)."""

    def __init__(self, advance: Callable[[float], object] | None = None) -> None:
        self.calls: list[float] = []
        self.advance = advance

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.advance is not None:
            self.advance(seconds)
        await asyncio.sleep(0)


def fast_options(**changes: Any) -> RunConfig:
    """A run configuration that never waits: no backoff, a fixed jitter, a short grace for missing records."""
    return RunConfig(backoff_base=0.0, jitter_seed=1, lost_after=5.0, use_cache=False).replace(**changes)


def write_manifest(folder: Path, text: str, name: str = "m.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@dataclass
class Driven:
    result: RunResult
    ledger: Ledger
    out: Path
    sleeps: list[float]
    changes: list[Counter[State]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """The command line's exit code for this result, with the default --fail-on."""
        return exit_code(self.result)

    def states(self) -> dict[str, str]:
        return {row[0]: row[1] for row in self.ledger.db.execute("SELECT key, state FROM requests")}

    def column(self, name: str) -> dict[str, Any]:
        return {row[0]: row[1] for row in self.ledger.db.execute(f"SELECT key, {name} FROM requests")}


def drive(manifest: Path, server: SimServer | None, *, out: Path, tokens: list[str] | None = None,
          options: RunConfig | None = None, cache: ResultCache | None = None,
          on_change: Callable[[Executor, Counter[State]], None] | None = None,
          clock: Callable[[], float] | None = None, sleep: NoWait | None = None,
          pool: list[Token] | None = None, base_url: BaseURL = None) -> Driven:
    """Plan ``manifest`` into the ledger at ``out`` and run it against ``server`` (or ``base_url``: a simulator by
    region), with ``tokens`` (or the ``pool``'s tokens, regions and proxies as parsed)."""
    loaded = load_manifest(manifest)
    ledger = Ledger.in_folder(out, **({"clock": clock} if clock else {}))  # one clock for submits and polls
    config = options or fast_options()
    ledger.begin_run(loaded.display, "sha", "test", {})
    ledger.add_planned(i for i in iter_distinct(loaded) if isinstance(i, RequestSpec))
    ledger.plan_id = ledger.run_id
    settle(ledger, config, out, planned_anew=True)  # as the runner does before it drives
    sleep = sleep or NoWait()
    changes: list[Counter[State]] = []
    local_files = {info.sha256: path for path, info in loaded.local_images().items()}

    async def main() -> RunResult:
        chosen = pool or [Token(t) for t in tokens or [TOKEN]]
        async with connected_executor(loaded, ledger, config, chosen,
                                      out_dir=out, base_url=server.base_url if server is not None else base_url,
                                      cache=cache, local_files=local_files,
                                      sleep=sleep, **({"clock": clock} if clock else {})) as executor:

            def watch(counts: Counter[State]) -> None:
                changes.append(Counter(counts))
                if on_change is not None:
                    on_change(executor, counts)

            executor.on_change = watch
            return await executor.run()

    result = asyncio.run(main())
    return Driven(result, ledger, out, sleep.calls, changes)


def planned_folder(manifest: Path, out: Path) -> Path:
    """An output folder whose ledger holds ``manifest``'s requests planned, none sent (a run stopped before its
    first submit)."""
    loaded = load_manifest(manifest)
    ledger = Ledger.in_folder(out)
    try:
        ledger.begin_run(loaded.display, "sha", "test", {})
        ledger.add_planned(i for i in iter_distinct(loaded) if isinstance(i, RequestSpec))
    finally:
        ledger.close()
    return out


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


IMAGES = """
    jobs:
      - name: pics
        type: image
        model: jimeng-4.0
        resolution: 1k
        prompt: [a red kite, a blue boat, a green hill, a white cat, a black dog]
"""
