"""A browser fingerprint per installation, fixed per token: the ``webId`` query parameter, the ``_tea_web_id`` and
``uid_tt`` cookies.

The web app draws them once per browser and keeps them; risk control (ret 4013) treats a session whose ids change
from request to request as abnormal, and one id shared by every account of every installation correlates them all
(protocol reference 1.4, 5). So each installation draws a random seed once, kept in the user's config folder
(``installation.json``, mode 0600), and each token's ids derive from that seed and the token's one-way account id:
the same on every run of this installation, different for every account and every installation. ``JIMENG_WEB_ID``
(or the protocol constant ``web_id``) names the webId instead; ``uid_tt`` stays per token.

Nothing here holds a token: only the account id, which does not reveal it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jimeng_batch.errors import ConfigError, describe
from jimeng_batch.protocol import catalog

CONFIG_DIR_ENV = "JIMENG_BATCH_CONFIG_DIR"
WEB_ID_ENV = "JIMENG_WEB_ID"
INSTALLATION_FILE = "installation.json"
_SEED = re.compile(r"[0-9a-f]{64}")
_WEB_ID = re.compile(catalog.PROTOCOL_VALUE_PATTERNS["web_id"][0])


def config_dir(environ: Mapping[str, str]) -> Path:
    """The user's config folder: ``$JIMENG_BATCH_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/jimeng-batch``, else
    ``~/.config/jimeng-batch``."""
    if environ.get(CONFIG_DIR_ENV):
        return Path(environ[CONFIG_DIR_ENV]).expanduser()
    base = environ.get("XDG_CONFIG_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".config") / "jimeng-batch"


@dataclass(frozen=True, slots=True)
class Identity:
    """What one token's requests carry, fixed for the process and across runs."""

    web_id: str
    uid_tt: str  # 32 hex digits


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """An installation's seed (and an explicit webId, if one is given)."""

    seed: str
    web_id: str | None = None

    def identity(self, account: str) -> Identity:
        """The ids of the account ``account`` (a token's one-way id, :attr:`Token.account`)."""
        digest = hashlib.sha256(f"jimeng-batch fingerprint\0{self.seed}\0{account}".encode()).hexdigest()
        # 7e18 plus up to 1e18, like the web app's Math.random()*999999999999999999+7e18: 19 digits.
        web_id = self.web_id or str(7 * 10**18 + int(digest[:16], 16) % 10**18)
        return Identity(web_id, digest[32:64])


def _read_seed(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the installation's fingerprint ({exc})") from None
    try:
        seed = json.loads(text).get("seed")
    except (ValueError, AttributeError):
        seed = None
    if not isinstance(seed, str) or not _SEED.fullmatch(seed):
        raise ConfigError(f"{path}: not an installation file of jimeng-batch (a JSON object with a 64-hex-digit "
                          f"'seed'); remove it to draw a new fingerprint")
    return seed


def _create_seed(path: Path) -> str:
    """Draw the seed and write it, readable by the user only; if another process won the race, read its seed."""
    seed = secrets.token_hex(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = _read_seed(path)
        if existing is None:
            raise ConfigError(f"{path}: the installation file vanished while it was being read") from None
        return existing
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the installation's fingerprint ({exc.strerror or exc}); set "
                          f"{CONFIG_DIR_ENV} to a folder that can be written") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"seed": seed, "about": "jimeng-batch: the seed of this installation's "
                                     "webId and uid_tt (no token)"}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise ConfigError(f"{path}: cannot write the installation's fingerprint ({exc.strerror or exc})") from None
    return seed


def load_fingerprint(environ: Mapping[str, str], *, web_id: str | None = None) -> Fingerprint:
    """This installation's fingerprint (its folder from ``environ``), drawn and stored on first use. ``web_id``
    names the webId instead of deriving it: the protocol constant, which ``JIMENG_WEB_ID`` sets
    (:mod:`jimeng_batch.protocol.constants` reads the environment, so that a run stores what it was given)."""
    if web_id is not None and not _WEB_ID.fullmatch(web_id):
        raise ConfigError(f"the protocol constant web_id ({WEB_ID_ENV}): {describe(web_id, 40)} is not a webId; "
                          f"expected {catalog.PROTOCOL_VALUE_PATTERNS['web_id'][1]}")
    path = config_dir(environ) / INSTALLATION_FILE
    seed = _read_seed(path) or _create_seed(path)
    return Fingerprint(seed, web_id)
