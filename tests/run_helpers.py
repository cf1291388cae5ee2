"""Running manifests against the simulator in tests: a real HTTP server on 127.0.0.1, no waiting.

``drive`` builds the executor directly (so a test can pass a sleep that waits for nothing and watch state changes);
``run_cli`` goes through the command line like a user.
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
from jimeng_batch.engine.executor import Executor, RunOptions, RunResult
from jimeng_batch.engine.ledger import Ledger
from jimeng_batch.intake.manifest import load_manifest
from jimeng_batch.intake.plan import iter_distinct, plan_web_id
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.client import JimengClient
from jimeng_batch.protocol.imagex import Uploader
from jimeng_batch.protocol.request_spec import RequestSpec
from jimeng_batch.protocol.tokens import Token
from jimeng_batch.sim import SimServer, config_from_mapping, running_simulator

TOKEN = "tokA0123456789abcdef0123456789ab"
TOKEN_B = "tokB0123456789abcdef0123456789ab"


@contextmanager
def simulator(**config: Any) -> Iterator[SimServer]:
    """A simulator with one image per request (small, fast tests) unless the test says otherwise."""
    config.setdefault("images_per_request", 1)
    with running_simulator(config_from_mapping(config)) as server:
        yield server


class NoWait:
    """A sleep that records what it was asked to wait and only yields to the event loop."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


def fast_options(**changes: Any) -> RunOptions:
    options = RunOptions(backoff_base=0.0, jitter_seed=1, not_found_grace=5.0)
    for name, value in changes.items():
        setattr(options, name, value)
    return options


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
    changes: list[Counter[str]] = field(default_factory=list)

    def states(self) -> dict[str, str]:
        return {row[0]: row[1] for row in self.ledger.db.execute("SELECT key, state FROM requests")}

    def column(self, name: str) -> dict[str, Any]:
        return {row[0]: row[1] for row in self.ledger.db.execute(f"SELECT key, {name} FROM requests")}  # noqa: S608


def drive(manifest: Path, server: SimServer, *, out: Path, tokens: list[str] | None = None,
          options: RunOptions | None = None, cache: ResultCache | None = None,
          on_change: Callable[[Executor, Counter[str]], None] | None = None) -> Driven:
    """Plan ``manifest`` into the ledger at ``out`` and run it against ``server``."""
    loaded = load_manifest(manifest)
    ledger = Ledger.in_folder(out)
    ledger.begin_run(loaded.display, "sha", "test", {})
    ledger.add_planned(i for i in iter_distinct(loaded) if isinstance(i, RequestSpec))
    sleep = NoWait()
    changes: list[Counter[str]] = []

    async def main() -> RunResult:
        region = catalog.REGIONS[loaded.settings.region]
        async with JimengClient(region=region, versions=loaded.settings.protocol, web_id=plan_web_id(loaded),
                                base_url=server.base_url) as client:
            uploader = Uploader(client, region, server.base_url)
            local_files = {info.sha256: path for path, info in loaded.local_images().items()}
            executor = Executor(ledger, client, [Token(t) for t in tokens or [TOKEN]], options or fast_options(),
                                out_dir=out, region=region, versions=loaded.settings.protocol,
                                web_id=plan_web_id(loaded), cache=cache, sleep=sleep, uploader=uploader,
                                local_files=local_files, upload_scope=f"{region.code}@{server.base_url}")

            def watch(counts: Counter[str]) -> None:
                changes.append(Counter(counts))
                if on_change is not None:
                    on_change(executor, counts)

            executor.on_change = watch
            return await executor.run()

    result = asyncio.run(main())
    return Driven(result, ledger, out, sleep.calls, changes)


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
