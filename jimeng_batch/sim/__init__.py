"""A local server that speaks the Jimeng web protocol: for tests, demos, benchmarks and ``--sim`` runs.

Start one in-process with :func:`running_simulator` (a context manager giving a :class:`SimServer` with
``.base_url``, ``.stats()`` and ``.state``), or from the shell with ``jimeng-batch sim serve``. Behaviour
(error-code profile, latencies, faults, credits, caps) comes from a :class:`SimConfig`; see docs/simulator.md.
"""

from jimeng_batch.sim.clock import FakeClock
from jimeng_batch.sim.config import SimConfig, config_from_mapping, load_config
from jimeng_batch.sim.server import SimServer, running_simulator
from jimeng_batch.sim.state import SimState, mask_token

__all__ = [
    "FakeClock",
    "SimConfig",
    "SimServer",
    "SimState",
    "config_from_mapping",
    "load_config",
    "mask_token",
    "running_simulator",
]
