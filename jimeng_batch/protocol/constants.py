"""The effective protocol constants: which profile, which overrides, and where each value came from.

The constants themselves (profiles, keys, what each may be) are :mod:`jimeng_batch.protocol.catalog`'s. Here is the
one function that layers them, :func:`resolve`, used by manifests, runs, ``plan``, ``protocol show`` and the
checks that run before credits are spent. Precedence, key by key, highest first:

1. a flag: ``--protocol KEY=VALUE`` (repeatable), then the file of ``--protocol-file``;
2. the environment: ``JIMENG_PROTOCOL_<KEY>`` (and ``JIMENG_WEB_ID`` for ``web_id``);
3. the manifest: its ``protocol:`` keys, then the file of its ``protocol: {file: ...}``;
4. the profile: ``--protocol-profile``, else the protocol file's ``profile``, else the manifest's, else ``live``.

Pure, besides reading a protocol file (YAML, under the same bounds as every YAML file).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from jimeng_batch import yaml_bounds
from jimeng_batch.errors import ConfigError, describe
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.catalog import ProtocolVersions
from jimeng_batch.protocol.fingerprint import WEB_ID_ENV

ENV_PREFIX = "JIMENG_PROTOCOL_"
FILE_KEYS = frozenset({"profile", *catalog.PROTOCOL_FIELDS})  # what a protocol file may hold
_PATTERNS = {key: re.compile(pattern) for key, (pattern, _) in catalog.PROTOCOL_VALUE_PATTERNS.items()}


def allowed_keys() -> str:
    return ", ".join(catalog.PROTOCOL_FIELDS)


def value_problem(key: str, value: object) -> str | None:
    """What is wrong with ``value`` for the constant ``key`` (None: nothing)."""
    if key not in catalog.PROTOCOL_VALUE_PATTERNS:
        return f"unknown protocol constant {describe(key, 60)}; allowed: {allowed_keys()}"
    if not isinstance(value, str) or not _PATTERNS[key].fullmatch(value):
        return (f"protocol constant {key}: {describe(str(value), 80)} is not allowed; expected "
                f"{catalog.PROTOCOL_VALUE_PATTERNS[key][1]}")
    return None


def parse_assignment(text: str, where: str = "--protocol") -> tuple[str, str]:
    """``KEY=VALUE`` from the command line, checked."""
    key, equals, value = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise ConfigError(f"{where}: {describe(text, 80)} is not KEY=VALUE; allowed keys: {allowed_keys()}")
    problem = value_problem(key, value)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return key, value


def parse_assignments(texts: Iterable[str]) -> dict[str, str]:
    return dict(parse_assignment(text) for text in texts)


def from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The constants the environment sets: ``JIMENG_PROTOCOL_<KEY>`` and ``JIMENG_WEB_ID``; an unknown
    ``JIMENG_PROTOCOL_`` name or a bad value is an error (a typo would otherwise be silently ignored)."""
    found: dict[str, str] = {}
    problems = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX):].lower()
        elif name == WEB_ID_ENV:
            key = "web_id"
        else:
            continue
        value = environ[name]
        if not value:
            continue
        problem = value_problem(key, value)
        if problem:
            problems.append(f"{name}: {problem}")
        else:
            found[key] = value
    if problems:
        raise ConfigError("; ".join(problems))
    return found


def environment_name(key: str, environ: Mapping[str, str]) -> str:
    """Which variable set ``key`` (for ``protocol show``)."""
    if key == "web_id" and environ.get(WEB_ID_ENV) and not environ.get(ENV_PREFIX + "WEB_ID"):
        return WEB_ID_ENV
    return ENV_PREFIX + key.upper()


@dataclass(frozen=True)
class ProtocolFile:
    """A protocol file (YAML): an optional ``profile`` and constants, as ``protocol import`` writes it."""

    path: Path
    profile: str | None
    values: Mapping[str, str]


def read_protocol_file(path: Path) -> ProtocolFile:
    """Read and check a protocol file; a clear error names the file and what is wrong."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such protocol file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown}: cannot be read as a protocol file ({exc})") from None
    try:
        data = yaml_bounds.load(text)
    except (yaml_bounds.YamlTooBig, yaml.YAMLError) as exc:
        raise ConfigError(f"{shown}: not a YAML protocol file ({describe(str(exc), 200)})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{shown}: a protocol file is a mapping of constants (KEY: VALUE); allowed keys: profile, "
                          f"{allowed_keys()}")
    profile = data.get("profile")
    if profile is not None and profile not in catalog.PROTOCOL_PROFILES:
        raise ConfigError(f"{shown}: profile {describe(str(profile), 40)} is not one of "
                          f"{', '.join(catalog.PROTOCOL_PROFILES)}")
    values: dict[str, str] = {}
    problems = []
    for key, value in data.items():
        if key == "profile":
            continue
        text_value = value if isinstance(value, str) else None
        problem = value_problem(str(key), text_value if text_value is not None else repr(value))
        if problem is None and text_value is None:
            problem = f"protocol constant {key}: write its value as a quoted string"
        if problem:
            problems.append(problem)
        else:
            values[str(key)] = str(value)
    if problems:
        raise ConfigError(f"{shown}: " + "; ".join(problems))
    return ProtocolFile(path, str(profile) if profile is not None else None, values)


@dataclass(frozen=True)
class ProtocolChoice:
    """What the command line (or the Python API) and the environment ask of the protocol constants.

    Part of a run's configuration, stored in its ledger: a resume sends what the run sent, whatever the
    environment of the shell that resumes says (a flag given again replaces this whole value).
    """

    profile: str | None = None  # --protocol-profile
    file: Path | None = None  # --protocol-file
    flags: Mapping[str, str] = field(default_factory=dict)  # --protocol KEY=VALUE
    environment: Mapping[str, str] = field(default_factory=dict)  # JIMENG_PROTOCOL_<KEY>, JIMENG_WEB_ID
    environment_names: Mapping[str, str] = field(default_factory=dict)  # key -> the variable that set it

    def __post_init__(self) -> None:
        if self.profile is not None and self.profile not in catalog.PROTOCOL_PROFILES:
            raise ConfigError(f"protocol profile {describe(self.profile, 40)} is not one of "
                              f"{', '.join(catalog.PROTOCOL_PROFILES)}")
        for where, values in (("--protocol", self.flags), ("the environment", self.environment)):
            for key, value in values.items():
                problem = value_problem(key, value)
                if problem:
                    raise ConfigError(f"{where}: {problem}")

    @classmethod
    def build(cls, *, profile: str | None = None, file: Path | None = None, assignments: Iterable[str] = (),
              environ: Mapping[str, str] | None = None) -> ProtocolChoice:
        """From the command line's texts and the environment (None: no environment)."""
        environment = from_environment(environ or {})
        return cls(profile=profile, file=file.expanduser().resolve() if file is not None else None,
                   flags=parse_assignments(assignments), environment=environment,
                   environment_names={key: environment_name(key, environ or {}) for key in environment})

    def updated(self, again: ProtocolChoice) -> ProtocolChoice:
        """This choice with what ``again`` gives (a resume's flags) replacing those parts only."""
        return replace(self, profile=again.profile or self.profile, file=again.file or self.file,
                       flags={**self.flags, **again.flags})

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile, "file": str(self.file) if self.file else None, "flags": dict(self.flags),
                "environment": dict(self.environment), "environment_names": dict(self.environment_names)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProtocolChoice:
        file = data.get("file")
        return cls(profile=data.get("profile"), file=Path(file) if file else None, flags=dict(data.get("flags", {})),
                   environment=dict(data.get("environment", {})),
                   environment_names=dict(data.get("environment_names", {})))


@dataclass(frozen=True)
class EffectiveProtocol:
    """The constants a manifest is sent with, and where each came from."""

    profile: str
    versions: ProtocolVersions
    sources: Mapping[str, str]  # key -> "profile live", "manifest protocol:", "file PATH", "environment NAME",
    # "flag --protocol-file PATH", "flag --protocol"

    def as_dict(self) -> dict[str, Any]:
        return {"profile": self.profile,
                "constants": {key: {"value": getattr(self.versions, key), "source": self.sources[key]}
                              for key in catalog.PROTOCOL_FIELDS}}


def resolve(choice: ProtocolChoice | None, manifest_protocol: Mapping[str, Any] | None = None,
            manifest_dir: Path | None = None) -> EffectiveProtocol:
    """The effective constants: ``choice`` (flags, environment) over the manifest's ``protocol:`` (and its file),
    over the profile. The one place the precedence is applied."""
    choice = choice or ProtocolChoice()
    in_manifest = dict(manifest_protocol or {})
    manifest_file = None
    if in_manifest.get("file"):
        manifest_file = read_protocol_file((manifest_dir or Path.cwd()) / str(in_manifest["file"]))
    flag_file = read_protocol_file(choice.file) if choice.file is not None else None
    profile_sources = (choice.profile, flag_file.profile if flag_file else None, in_manifest.get("profile"),
                       manifest_file.profile if manifest_file else None)
    profile = next((str(p) for p in profile_sources if p), catalog.DEFAULT_PROTOCOL_PROFILE)
    # Lowest first: each later layer replaces the keys it holds.
    layers: list[tuple[str, Mapping[str, str]]] = []
    if manifest_file:
        layers.append((f"file {manifest_file.path}", manifest_file.values))
    layers.append(("manifest protocol:", {k: str(v) for k, v in in_manifest.items() if k in catalog.PROTOCOL_FIELDS}))
    for key, value in choice.environment.items():
        name = choice.environment_names.get(key, ENV_PREFIX + key.upper())
        layers.append((f"environment {name}", {key: value}))
    if flag_file:
        layers.append((f"flag --protocol-file {flag_file.path}", flag_file.values))
    layers.append(("flag --protocol", choice.flags))
    sources = {key: f"profile {profile}" for key in catalog.PROTOCOL_FIELDS}
    values: dict[str, str] = {}
    for source, layer in layers:
        for key, value in layer.items():
            values[key], sources[key] = value, source
    versions = catalog.PROTOCOL_PROFILES[profile].with_overrides(values)
    return EffectiveProtocol(profile, versions, MappingProxyType(sources))
