"""The web API's request signature (the `Sign` header). Pure functions, shared by the client and the simulator.

The formula was verified against a captured browser request (see the protocol reference, section 1.4):
``md5("9e2c|" + last 7 characters of the URI path + "|" + Pf + "|" + Appvr + "|" + Device-Time + "|" + Tdid +
"|11ac")``.
"""

from __future__ import annotations

import hashlib

SIGN_PREFIX = "9e2c"
SIGN_SUFFIX = "11ac"
SIGNED_PATH_CHARS = 7


def web_sign(path: str, *, platform: str, app_version: str, device_time: int | str, tdid: str = "") -> str:
    """The hex md5 `Sign` header for a request to ``path`` sent at ``device_time`` (unix seconds)."""
    material = "|".join(
        (SIGN_PREFIX, path[-SIGNED_PATH_CHARS:], platform, app_version, str(device_time), tdid, SIGN_SUFFIX)
    )
    return hashlib.md5(material.encode("utf-8")).hexdigest()  # noqa: S324 - the service's formula, not security
