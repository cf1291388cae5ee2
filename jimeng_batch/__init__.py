"""jimeng-batch: declarative, validated, resumable batches of Jimeng / Dreamina AIGC generations.

The Python API, for notebooks and scripts::

    import jimeng_batch as jb

    problems = jb.validate("jobs/demo.yaml")          # [] when the manifest is fine
    summary = jb.plan("jobs/demo.yaml").summary       # counts and estimated credits, nothing sent
    result = jb.run("jobs/demo.yaml", sim=True, out="out/demo", concurrency=3)
    result.counts                                     # {State.DOWNLOADED: 8}
    frame = jb.results("out/demo")                    # one row per request (pandas)

``run`` works inside a running event loop (Jupyter); ``await jb.arun(...)`` runs in the caller's loop instead.
Errors are the :class:`JimengBatchError` tree of :mod:`jimeng_batch.errors`.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

from jimeng_batch._version import __version__
from jimeng_batch.errors import (
    APIError,
    ConfigError,
    JimengBatchError,
    LedgerError,
    Location,
    ManifestError,
    OutputError,
    Problem,
    RequestFailedError,
    RetryableAPIError,
    SchemaError,
    StopSubmittingError,
)

if _TYPE_CHECKING:
    from jimeng_batch.api import Plan, arun, metrics, plan, results, resume, run, validate
    from jimeng_batch.engine.config import RunConfig
    from jimeng_batch.engine.result import RunResult
    from jimeng_batch.engine.states import State
    from jimeng_batch.intake.plan import PlanSummary

# Imported when first used (PEP 562): every command imports some module of the package, which runs this file, and
# the run's engine, httpx and the simulator were a third of a second of the start of `plan` or `validate`.
_LAZY = {
    **dict.fromkeys(("Plan", "arun", "metrics", "plan", "results", "resume", "run", "validate"), "jimeng_batch.api"),
    "RunConfig": "jimeng_batch.engine.config", "RunResult": "jimeng_batch.engine.result",
    "State": "jimeng_batch.engine.states", "PlanSummary": "jimeng_batch.intake.plan",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jimeng_batch' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "APIError",
    "ConfigError",
    "JimengBatchError",
    "LedgerError",
    "Location",
    "ManifestError",
    "OutputError",
    "Plan",
    "PlanSummary",
    "Problem",
    "RequestFailedError",
    "RetryableAPIError",
    "RunConfig",
    "RunResult",
    "SchemaError",
    "State",
    "StopSubmittingError",
    "__version__",
    "arun",
    "metrics",
    "plan",
    "results",
    "resume",
    "run",
    "validate",
]
