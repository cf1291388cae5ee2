"""A request copied from the browser's developer tools: its protocol constants, and its draft beside ours.

Three forms are read: a HAR file (JSON, ``log.entries[].request``), "copy as cURL" (bash) and Chrome's "copy as
fetch" (``fetch("url", {"headers": {...}, "body": "...", "method": "POST"})``). From the request the version
constants (query ``da_version``, ``web_version``, ``aigc_features``, ``os``; headers ``Appvr``, ``Pf``,
``Sign-Ver``, ``App-Sdk-Version``; the draft's ``version``) and the browser's headers (User-Agent, ``Sec-Ch-Ua*``,
``Sec-Fetch-*``, Accept-Language, Priority) are taken. The cookie is never read: its header (and cURL's ``-b``) is
dropped while the capture is parsed, so no session token can reach a protocol file or a message. The webId is not
taken either: each token sends its own (:mod:`jimeng_batch.protocol.fingerprint`).

:func:`compare_draft` builds, with :func:`jimeng_batch.protocol.drafts.build_request`, the request this tool would
send for the parameters the captured draft carries (model, prompt, ratio, resolution, seed, ...), and lists the
keys missing, extra and different by JSON path; ids and times are expected to differ and are left out.

Pure: the caller reads the file.
"""

from __future__ import annotations

import codecs
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from jimeng_batch.errors import ConfigError, describe
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.catalog import ProtocolVersions
from jimeng_batch.protocol.constants import value_problem
from jimeng_batch.protocol.drafts import GENERATE_PATH, build_request
from jimeng_batch.protocol.request_spec import ImageInput, RequestSpec, Source

CaptureForm = Literal["har", "curl", "fetch"]

# Where each constant is in a captured request.
QUERY_CONSTANTS: Mapping[str, str] = {"da_version": "da_version", "web_version": "web_version",
                                      "aigc_features": "aigc_features", "os": "os"}
HEADER_CONSTANTS: Mapping[str, str] = {
    "appvr": "app_version", "pf": "platform", "sign-ver": "sign_version", "app-sdk-version": "app_sdk_version",
    "user-agent": "user_agent", "sec-ch-ua": "sec_ch_ua", "sec-ch-ua-mobile": "sec_ch_ua_mobile",
    "sec-ch-ua-platform": "sec_ch_ua_platform", "accept-language": "accept_language",
    "sec-fetch-site": "sec_fetch_site", "sec-fetch-mode": "sec_fetch_mode", "sec-fetch-dest": "sec_fetch_dest",
    "priority": "priority",
}
# Values that differ between any two requests, whatever sends them.
IGNORED_KEYS = frozenset({"id", "main_component_id", "created_time_in_ms", "submit_id", "generateId",
                          "originSubmitId", "history_id"})
_SECRET_HEADERS = frozenset({"cookie", "x-tt-token", "authorization"})


@dataclass(frozen=True, slots=True)
class CapturedRequest:
    """One request of a capture, without its cookie."""

    form: CaptureForm
    method: str
    url: str
    headers: Mapping[str, str]  # lower-case names; the Cookie header is never kept
    body: str | None
    had_cookie: bool  # a cookie was there, and was not read

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))


@dataclass(frozen=True, slots=True)
class Difference:
    """One place where the captured draft and ours differ."""

    path: str
    kind: Literal["missing", "extra", "different"]  # missing: the capture has it and we do not; extra: the reverse
    captured: Any = None
    ours: Any = None


def _headers(pairs: Iterator[tuple[str, str]]) -> tuple[dict[str, str], bool]:
    headers: dict[str, str] = {}
    had_cookie = False
    for name, value in pairs:
        lower = name.strip().lower()
        if lower in _SECRET_HEADERS:
            had_cookie = had_cookie or lower == "cookie"
            continue  # never kept, never read further
        headers[lower] = value.strip()
    return headers, had_cookie


def parse_capture(text: str, name: str) -> CapturedRequest:
    """The request in ``text`` (a HAR file, a cURL command or a fetch call); ConfigError naming ``name`` and what
    was expected when it is none of them."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("{"):
        return _from_har(stripped, name)
    if stripped.startswith("curl"):
        return _from_curl(stripped, name)
    if stripped.startswith(("fetch(", "await fetch(")):
        return _from_fetch(stripped, name)
    raise ConfigError(f"{name}: not a captured request; expected a HAR file (JSON with log.entries), a \"copy as "
                      f"cURL (bash)\" command starting with curl, or a \"copy as fetch\" call starting with fetch(")


def _from_har(text: str, name: str) -> CapturedRequest:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: not a HAR file: the JSON cannot be read ({exc})") from None
    entries = data.get("log", {}).get("entries") if isinstance(data, Mapping) and isinstance(
        data.get("log"), Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{name}: not a HAR file: expected log.entries, a list of requests")
    requests = [entry.get("request") for entry in entries if isinstance(entry, Mapping)]
    usable = [r for r in requests if isinstance(r, Mapping) and isinstance(r.get("url"), str)]
    if not usable:
        raise ConfigError(f"{name}: no entry of log.entries has a request with a url")
    chosen = next((r for r in usable if urlsplit(r["url"]).path.endswith(GENERATE_PATH)),
                  next((r for r in usable if "da_version=" in r["url"]), usable[0]))
    raw_headers = chosen.get("headers")
    raw_headers = raw_headers if isinstance(raw_headers, list) else []
    headers, had_cookie = _headers((str(h.get("name", "")), str(h.get("value", ""))) for h in raw_headers
                                   if isinstance(h, Mapping))
    had_cookie = had_cookie or bool(chosen.get("cookies"))
    post = chosen.get("postData")
    body = post.get("text") if isinstance(post, Mapping) and isinstance(post.get("text"), str) else None
    return CapturedRequest("har", str(chosen.get("method") or "GET").upper(), chosen["url"], headers, body,
                           had_cookie)


_ANSI_C = re.compile(r"\$'((?:[^'\\]|\\.)*)'", re.DOTALL)


def _ansi_c(match: re.Match[str]) -> str:
    """bash's $'...' (Chrome uses it for bodies with quotes or non-ASCII text) as a plain quoted word."""
    raw = match.group(1)
    decoded = codecs.decode(raw.encode("latin-1", "backslashreplace"), "unicode_escape")
    try:  # \xNN escapes spell UTF-8 bytes
        decoded = decoded.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    return shlex.quote(decoded)


_CURL_DATA = frozenset({"-d", "--data", "--data-raw", "--data-binary", "--data-ascii", "--data-urlencode"})
_CURL_FLAGS = frozenset({"--compressed", "-s", "--silent", "-k", "--insecure", "-L", "--location", "-i", "-v"})


def _from_curl(text: str, name: str) -> CapturedRequest:
    joined = re.sub(r"\\\r?\n", " ", text)
    try:
        words = shlex.split(_ANSI_C.sub(_ansi_c, joined))
    except ValueError as exc:
        raise ConfigError(f"{name}: not a cURL command that can be read ({exc}); expected \"copy as cURL "
                          f"(bash)\"") from None
    url = method = body = None
    pairs: list[tuple[str, str]] = []
    had_cookie = False
    index = 1
    while index < len(words):
        word = words[index]
        value = words[index + 1] if index + 1 < len(words) else None
        if word in ("-H", "--header") and value is not None:
            header, _, header_value = value.partition(":")
            pairs.append((header, header_value))
            index += 2
        elif word in ("-b", "--cookie") and value is not None:
            had_cookie = True  # the session: skipped unread
            index += 2
        elif word in _CURL_DATA and value is not None:
            body = value
            index += 2
        elif word in ("-X", "--request") and value is not None:
            method = value.upper()
            index += 2
        elif word == "--url" and value is not None:
            url = value
            index += 2
        elif word.startswith("-"):
            index += 1 if word in _CURL_FLAGS or value is None or value.startswith("-") else 2
        else:
            url = url or word
            index += 1
    if not url:
        raise ConfigError(f"{name}: the cURL command names no URL")
    headers, cookie_header = _headers(iter(pairs))
    return CapturedRequest("curl", method or ("POST" if body is not None else "GET"), url, headers, body,
                           had_cookie or cookie_header)


_FETCH = re.compile(r"(?:await\s+)?fetch\(\s*(\"(?:[^\"\\]|\\.)*\")\s*,\s*(\{.*\})\s*\)\s*;?\s*\Z", re.DOTALL)


def _from_fetch(text: str, name: str) -> CapturedRequest:
    match = _FETCH.match(text.strip())
    if not match:
        raise ConfigError(f"{name}: not a \"copy as fetch\" call; expected fetch(\"URL\", {{\"headers\": {{...}}, "
                          f"\"body\": ..., \"method\": ...}})")
    try:
        url = json.loads(match.group(1))
        options = json.loads(match.group(2))
    except ValueError as exc:
        raise ConfigError(f"{name}: the fetch call's URL or options are not JSON ({exc})") from None
    if not isinstance(options, Mapping):
        raise ConfigError(f"{name}: the fetch call's second argument is not an object")
    raw_headers = options.get("headers")
    raw_headers = raw_headers if isinstance(raw_headers, Mapping) else {}
    headers, had_cookie = _headers((str(k), str(v)) for k, v in raw_headers.items())
    if isinstance(options.get("referrer"), str):
        headers.setdefault("referer", options["referrer"])
    body = options.get("body") if isinstance(options.get("body"), str) else None
    return CapturedRequest("fetch", str(options.get("method") or "GET").upper(), str(url), headers, body,
                           had_cookie)


# -- the constants -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Extracted:
    """The constants of a capture, and the values left out (with why)."""

    values: Mapping[str, str]
    skipped: Mapping[str, str]  # key -> why it was not taken


def draft_of(request: CapturedRequest) -> dict[str, Any] | None:
    """The captured ``draft_content`` tree, or None when the request carries none."""
    body = _body(request)
    draft = body.get("draft_content") if body else None
    if not isinstance(draft, str):
        return None
    try:
        parsed = json.loads(draft)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _body(request: CapturedRequest) -> dict[str, Any] | None:
    if not request.body:
        return None
    try:
        body = json.loads(request.body)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def extract_constants(request: CapturedRequest) -> Extracted:
    found: dict[str, str] = {}
    query = request.query
    for parameter, key in QUERY_CONSTANTS.items():
        if parameter in query:
            found[key] = query[parameter]
    for header, key in HEADER_CONSTANTS.items():
        if header in request.headers:
            found[key] = request.headers[header]
    draft = draft_of(request)
    if draft is not None and isinstance(draft.get("version"), str):
        found["draft_version"] = draft["version"]
    values: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for key, value in found.items():
        problem = value_problem(key, value)
        if problem:
            skipped[key] = problem
        else:
            values[key] = value
    return Extracted(values, skipped)


# -- the draft beside ours -----------------------------------------------------------------------------------------


def _region(request: CapturedRequest) -> catalog.Region:
    wanted = request.query.get("region", "")
    for region in catalog.REGIONS.values():
        if region.query_region == wanted:
            return region
    return catalog.REGIONS[catalog.DEFAULT_REGION]


def _image(node: Any) -> ImageInput:
    node = node if isinstance(node, Mapping) else {}
    uri = str(node.get("image_uri") or node.get("uri") or "")
    return ImageInput("uri", uri, None, int(node.get("width") or 0), int(node.get("height") or 0),
                      str(node.get("format") or ""))


def _reference(item: Mapping[str, Any]) -> ImageInput:
    images = item.get("image_list") or [{}]
    return replace(_image(images[0]), strength=item.get("strength"))


def captured_spec(request: CapturedRequest) -> RequestSpec:
    """The request this tool would make of the captured draft's parameters; ConfigError saying what is missing."""
    draft = draft_of(request)
    if draft is None:
        raise ConfigError("the request carries no draft_content (capture a POST to " + GENERATE_PATH + ")")
    body = _body(request) or {}
    components = draft.get("component_list")
    component = components[0] if isinstance(components, list) and components else None
    abilities = component.get("abilities") if isinstance(component, Mapping) else None
    if not isinstance(abilities, Mapping):
        raise ConfigError("the draft has no component_list[0].abilities")
    region = _region(request)
    base = RequestSpec(key="0" * 32, submit_id=str(body.get("submit_id") or ""), sample=0, type="image",
                       region=region.code, model="", model_key="", prompt="", seed=None, seed_given=False,
                       resolution="", source=Source("capture", "capture", 0), estimated_credits=0.0)
    if isinstance(abilities.get("gen_video"), Mapping):
        params = abilities["gen_video"].get("text_to_video_params") or {}
        inputs = params.get("video_gen_inputs") or [{}]
        first = inputs[0] if isinstance(inputs[0], Mapping) else {}
        key = str(params.get("model_req_key") or "")
        model = catalog.find_model(key)
        if not isinstance(model, catalog.VideoModel):
            raise ConfigError(f"the draft's video model {describe(key, 80)} is not in the catalog")
        return replace(
            base, type="video", model=model.name, model_key=key, prompt=str(first.get("prompt") or ""),
            seed=params.get("seed"), seed_given=True, resolution=str(first.get("resolution") or "720p"),
            duration=int(first.get("duration_ms") or 0) // 1000, aspect_ratio=params.get("video_aspect_ratio"),
            fps=first.get("fps"),
            first_frame=_image(first["first_frame_image"]) if first.get("first_frame_image") else None,
            end_frame=_image(first["end_frame_image"]) if first.get("end_frame_image") else None)
    ability = abilities.get("generate") or abilities.get("blend")
    core = ability.get("core_param") if isinstance(ability, Mapping) else None
    if not isinstance(core, Mapping):
        raise ConfigError("the draft has neither abilities.generate, abilities.blend nor abilities.gen_video with "
                          "its parameters")
    key = str(core.get("model") or "")
    model = catalog.find_model(key)
    if not isinstance(model, catalog.ImageModel):
        raise ConfigError(f"the draft's image model {describe(key, 80)} is not in the catalog")
    codes = {code: ratio for ratio, code in catalog.IMAGE_RATIO_CODES.items()}
    ratio = codes.get(core.get("image_ratio"))  # type: ignore[arg-type]
    large = core.get("large_image_info")
    large = large if isinstance(large, Mapping) else {}
    resolution = str(large.get("resolution_type") or catalog.DEFAULT_IMAGE_RESOLUTION)
    if ratio is None or resolution not in model.resolutions:
        raise ConfigError(f"the draft's image_ratio {describe(str(core.get('image_ratio')))} or resolution "
                          f"{describe(resolution)} is not one this tool sends for {model.name}")
    prompt = str(core.get("prompt") or "")
    if "blend" in abilities:
        listed = abilities["blend"].get("ability_list") or []
        references = tuple(_reference(item) for item in listed if isinstance(item, Mapping))
        mark = catalog.BLEND_PROMPT_MARK * (len(references) + 1)
        return replace(base, type="image_to_image", model=model.name, model_key=key,
                           prompt=prompt.removeprefix(mark), seed=None, seed_given=False, resolution=resolution,
                           ratio=ratio, sample_strength=core.get("sample_strength"), references=references)
    return replace(base, type="image", model=model.name, model_key=key, prompt=prompt,
                       seed=core.get("seed"), seed_given=True, resolution=resolution, ratio=ratio,
                       sample_strength=core.get("sample_strength"),
                       negative_prompt=str(core.get("negative_prompt") or ""))


def _comparable(body: Mapping[str, Any]) -> dict[str, Any]:
    """A body with its JSON strings (draft_content, metrics_extra) read, so that they compare key by key."""
    out = dict(body)
    for name in ("draft_content", "metrics_extra"):
        if isinstance(out.get(name), str):
            try:
                out[name] = json.loads(out[name])
            except ValueError:
                pass
    return out


def compare_draft(request: CapturedRequest, versions: ProtocolVersions) -> tuple[RequestSpec, list[Difference]]:
    """The parameters of the captured draft, and where the captured body differs from the one this tool builds for
    them (with ``versions``); ConfigError saying why when the draft cannot be compared."""
    try:
        spec = captured_spec(request)
        ours = build_request(spec, _region(request), versions, web_id="0").body
    except (KeyError, IndexError, AssertionError, AttributeError, TypeError, ValueError) as exc:
        # An untrusted file: a field of an unexpected type or form is said, not raised.
        raise ConfigError(f"the draft's parameters are not of the form this tool sends ({type(exc).__name__})"
                          ) from None
    return spec, list(_diff(_comparable(_body(request) or {}), _comparable(ours), "body"))


def _diff(captured: Any, ours: Any, path: str) -> Iterator[Difference]:
    if isinstance(captured, Mapping) and isinstance(ours, Mapping):
        for key in captured:
            if key in IGNORED_KEYS:
                continue
            where = f"{path}.{key}"
            if key not in ours:
                yield Difference(where, "missing", captured[key])
            else:
                yield from _diff(captured[key], ours[key], where)
        for key in ours:
            if key not in captured and key not in IGNORED_KEYS:
                yield Difference(f"{path}.{key}", "extra", None, ours[key])
    elif isinstance(captured, list) and isinstance(ours, list):
        for index in range(max(len(captured), len(ours))):
            where = f"{path}[{index}]"
            if index >= len(ours):
                yield Difference(where, "missing", captured[index])
            elif index >= len(captured):
                yield Difference(where, "extra", None, ours[index])
            else:
                yield from _diff(captured[index], ours[index], where)
    elif captured != ours or type(captured) is not type(ours):
        yield Difference(path, "different", captured, ours)
