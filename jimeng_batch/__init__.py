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

from jimeng_batch._version import __version__
from jimeng_batch.api import Plan, arun, metrics, plan, results, resume, run, validate
from jimeng_batch.engine.config import RunConfig
from jimeng_batch.engine.result import RunResult
from jimeng_batch.engine.states import State
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
from jimeng_batch.intake.plan import PlanSummary

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
