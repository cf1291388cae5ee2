"""The one uvicorn internal the simulator relies on, pinned: pyproject's range, the module's constant and the
installed uvicorn agree, and the methods it replaces still have the shape it was written for."""

from __future__ import annotations

import inspect
import logging
import tomllib

import uvicorn
from conftest import REPO
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from run_helpers import simulator

from jimeng_batch.sim.uvicorn_compat import DROPPED_ANSWER_LOG, TESTED_VERSIONS, FastStopServer


def test_the_pin_in_pyproject_is_the_tested_range_and_holds() -> None:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    (pinned,) = [Requirement(d) for d in dependencies if Requirement(d).name == "uvicorn"]
    assert pinned.specifier == SpecifierSet(TESTED_VERSIONS)
    assert uvicorn.__version__ in SpecifierSet(TESTED_VERSIONS)


def test_the_replaced_methods_have_the_shape_they_were_written_for() -> None:
    assert inspect.iscoroutinefunction(uvicorn.Server.main_loop)
    assert list(inspect.signature(uvicorn.Server.main_loop).parameters) == ["self"]
    assert inspect.iscoroutinefunction(uvicorn.Server.on_tick)
    assert list(inspect.signature(uvicorn.Server.on_tick).parameters) == ["self", "counter"]
    assert "asyncio.sleep(0.1)" in inspect.getsource(uvicorn.Server.main_loop)  # the tick this replaces


def test_a_simulator_serves_and_stops() -> None:
    with simulator() as server:
        assert isinstance(server._server, FastStopServer)
        thread = server._thread
        assert thread.is_alive()
    assert not thread.is_alive()


def test_dropped_answers_are_not_logged_as_errors() -> None:
    with simulator():
        logger = logging.getLogger("uvicorn.error")
        record = logger.makeRecord("uvicorn.error", logging.ERROR, __file__, 1, DROPPED_ANSWER_LOG, (), None)
        assert not logger.filter(record)
        other = logger.makeRecord("uvicorn.error", logging.ERROR, __file__, 1, "something else", (), None)
        assert logger.filter(other)
