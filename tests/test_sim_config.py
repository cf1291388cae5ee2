"""Simulator settings: defaults, YAML loading, and errors that say where the problem is."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from jimeng_batch.errors import ConfigError
from jimeng_batch.sim.config import (
    Distribution,
    SimConfig,
    config_from_mapping,
    load_config,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sim.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_an_instant_well_behaved_server() -> None:
    config = SimConfig()
    assert config.profile == "document"
    assert config.latency.queue.is_zero and config.latency.generation.is_zero
    assert config.faults.busy_probability == 0 == config.faults.drop_probability
    assert config.max_in_flight == 3
    assert config.effective_min_da_version == "3.3.2"
    assert not config.effective_require_os
    live = config.with_profile("live")
    assert live.effective_min_da_version == "3.3.8" and live.effective_require_os


def test_yaml_with_every_section(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
profile: live
seed: 7
accounts:
  tokenA: 10
max_in_flight: null
latency:
  submit: 0.5
  queue: {uniform: [1, 3]}
  generation: {lognormal: {median: 10, sigma: 0.5, cap: 60}}
  video_generation: {fixed: 30}
faults:
  busy_probability: 0.1
  http_error_statuses: [502]
  slow_poll_delay: {lognormal: [2, 0.1]}
rate_limit: {requests: 5, window_s: 2}
content_filter: {words: [nsfw, gore]}
error_codes: {busy: "5000"}
known_image_uris: []
"""))
    assert config.profile == "live" and config.seed == 7
    assert dict(config.accounts) == {"tokenA": 10}
    assert config.max_in_flight is None
    assert config.latency.submit == Distribution("fixed", 0.5)
    assert config.latency.queue == Distribution("uniform", 1.0, 3.0)
    assert config.latency.generation == Distribution("lognormal", 10.0, 0.5, 60.0)
    assert config.latency.video_generation == Distribution("fixed", 30.0)
    assert config.faults.http_error_statuses == (502,)
    assert config.rate_limit.requests == 5
    assert config.content_filter.words == ("nsfw", "gore")
    assert config.error_codes == {"busy": "5000"}
    assert config.known_image_uris == ()
    assert "tokenA" not in repr(config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("seed: 1\nfaults:\n  busy_probabilty: 0.1\n", r"sim.yaml:3:3: faults.busy_probabilty: unknown key",
                     id="unknown-nested-key"),
        pytest.param("sede: 1\n", r"sim.yaml:1:1: sede: unknown key; allowed: .*seed", id="unknown-top-key"),
        pytest.param("profile: staging\n", r"sim.yaml:1:1: profile: must be one of document, live", id="profile"),
        pytest.param("seed: many\n", r"seed: must be a whole number", id="type"),
        pytest.param("strict_accounts: 1\n", r"strict_accounts: must be true or false", id="bool"),
        pytest.param("latency:\n  queue: {gamma: 2}\n", r"sim.yaml:2:3: latency.queue: unknown distribution 'gamma'",
                     id="distribution-kind"),
        pytest.param("latency:\n  queue: {uniform: [3, 1]}\n", r"low <= high", id="uniform-order"),
        pytest.param("latency:\n  queue: -1\n", r"must not be negative", id="negative"),
        pytest.param("faults:\n  drop_probability: 2\n", r"faults.drop_probability must be between 0 and 1",
                     id="probability"),
        pytest.param("faults:\n  http_error_statuses: [302]\n", r"must be 4xx or 5xx", id="status"),
        pytest.param("error_codes: {teapot: '418'}\n", r"error_codes.teapot: unknown outcome", id="error-code"),
        pytest.param("max_in_flight: 0\n", r"max_in_flight must be at least 1", id="cap"),
        pytest.param("- a\n- b\n", r"must be a mapping", id="not-a-mapping"),
        pytest.param("seed: [1\n", r"not valid YAML", id="yaml-syntax"),
    ],
)
def test_config_errors_are_located(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == SimConfig()


def test_config_from_mapping() -> None:
    config = config_from_mapping({"profile": "live", "faults": {"busy_probability": 1}})
    assert config.faults.busy_probability == 1.0
    with pytest.raises(ConfigError, match="nope: unknown key"):
        config_from_mapping({"nope": 1})


@pytest.mark.parametrize(
    "distribution",
    [
        pytest.param(Distribution("fixed", 2.0), id="fixed"),
        pytest.param(Distribution("uniform", 1.0, 3.0), id="uniform"),
        pytest.param(Distribution("lognormal", 10.0, 0.5, 12.0), id="lognormal-capped"),
    ],
)
def test_distributions_are_seeded_and_bounded(distribution: Distribution) -> None:
    def draw(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [distribution.sample(rng) for _ in range(50)]

    assert draw(1) == draw(1)
    rng = random.Random(2)
    samples = [distribution.sample(rng) for _ in range(500)]
    assert all(s >= 0 for s in samples)
    if distribution.kind == "uniform":
        assert all(1.0 <= s <= 3.0 for s in samples)
    if distribution.cap is not None:
        assert max(samples) <= distribution.cap


@pytest.mark.parametrize(("text", "said"), [
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
     ":5:1: expands to more than 100,000 values"),
    ("seed: " + "[" * 300 + "1" + "]" * 300 + "\n", ":1:70: nested more than 64 levels deep"),
    ("loop: &loop [*loop]\n", ":1:7: nested more than 64 levels deep (an alias that contains itself?)"),
])
def test_a_config_that_would_expand_without_end_is_refused(tmp_path: Path, text: str, said: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"sim.yaml{said}")):
        load_config(write(tmp_path, text))
