"""The HTTP client for the web API: one ``httpx.AsyncClient``, one connection pool.

It adds what every call needs (the query parameters, the ``Sign`` and version headers, the minimal cookie jar
built from a session token), parses answers into typed results, and turns every failure into an ``APIError``
that carries its :class:`~jimeng_batch.protocol.outcomes.Rule` from the one table in
:mod:`jimeng_batch.protocol.outcomes`.
The transport is a parameter, so tests can pass ``httpx.MockTransport`` or point at the simulator.

A token never appears in a message, a log line or an exception: only its masked label does.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from jimeng_batch.errors import (
    APIError,
)
from jimeng_batch.protocol import answers
from jimeng_batch.protocol.catalog import ProtocolVersions, Region
from jimeng_batch.protocol.drafts import GENERATE_PATH, DraftRequest, common_query
from jimeng_batch.protocol.fingerprint import Fingerprint, Identity
from jimeng_batch.protocol.limits import DEFAULT_LIMITS, CallLimits
from jimeng_batch.protocol.outcomes import Source, classify, error_for
from jimeng_batch.protocol.signing import web_sign
from jimeng_batch.protocol.tokens import Token

HISTORY_PATH = "/mweb/v1/get_history_by_ids"
USER_CREDIT_PATH = "/commerce/v1/benefits/user_credit"
CREDIT_RECEIVE_PATH = "/commerce/v1/benefits/credit_receive"
UPLOAD_TOKEN_PATH = "/mweb/v1/get_upload_token"  # noqa: S105 - a URL path, not a secret


# Record statuses (protocol reference 2.3).
STATUS_DONE = 50
STATUS_FAILED = 30
FAILED_STATUSES = frozenset({30, 60, 70, 80})


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submit the service accepted."""

    history_record_id: str
    task_id: str
    submit_id: str


@dataclass(frozen=True, slots=True)
class Item:
    """One generated output: where to fetch it and what the service says it is."""

    url: str
    kind: str  # "image" or "video"
    item_id: str = ""
    uri: str = ""
    width: int = 0
    height: int = 0
    format: str = ""


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """A ``get_history_by_ids`` entry, reduced to what the executor needs."""

    history_record_id: str
    status: int
    fail_code: str = ""
    fail_message: str = ""
    items: tuple[Item, ...] = ()
    total_count: int = 0
    finished_count: int = 0
    finish_time: int = 0
    forecast_seconds: float | None = None
    queue_position: int | None = None
    malformed: str = ""  # why this entry of an answer could not be read (the others of the answer still are)

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    def complete(self, kind: str) -> bool:
        """The protocol reference's completion rule (a status alone is not enough)."""
        if self.failed:
            return False
        if kind == "video":
            return self.status == STATUS_DONE and any(item.url for item in self.items)
        return (self.finished_count >= self.total_count > 0 and len(self.items) >= self.total_count
                and self.finish_time > 0)


@dataclass(frozen=True, slots=True)
class CreditBalance:
    """An account's credits, from ``user_credit``."""

    gift: int = 0
    purchase: int = 0
    vip: int = 0
    expiring: int = 0

    @property
    def total(self) -> int:
        # The live service has shown gift_credit 0 while expiring_credits held the day's grant; count the larger.
        return max(self.gift, self.expiring) + self.purchase + self.vip


def parse_item(raw: Any, path: str = "item") -> Item | None:
    """One item of ``item_list``: an image's large image, or a video's URL (with the reference's fallbacks)."""
    entry = answers.mapping(raw, path)
    common = answers.mapping(entry.get("common_attr"), f"{path}.common_attr")
    item_id = answers.text(common.get("id") or common.get("item_id") or entry.get("item_id") or entry.get("id"),
                           f"{path}.common_attr.id")
    video = entry.get("video")
    if isinstance(video, Mapping):
        where = f"{path}.video"
        transcoded = answers.mapping(answers.mapping(video.get("transcoded_video") or common.get("transcoded_video"),
                                                     f"{where}.transcoded_video").get("origin"),
                                     f"{where}.transcoded_video.origin")
        url = answers.text(transcoded.get("video_url") or video.get("play_url") or video.get("download_url")
                           or video.get("url"), f"{where}.transcoded_video.origin.video_url")
        if url:
            return Item(url, "video", item_id, "",
                        answers.integer(transcoded.get("width") or video.get("width"), f"{where}.width"),
                        answers.integer(transcoded.get("height") or video.get("height"), f"{where}.height"),
                        answers.text(transcoded.get("format"), f"{where}.format") or "mp4")
    image = entry.get("image")
    if isinstance(image, Mapping):
        where = f"{path}.image"
        large = answers.first(image.get("large_images"), f"{where}.large_images")
        url = answers.text(large.get("image_url") or common.get("cover_url"), f"{where}.large_images[0].image_url")
        if url:
            return Item(url.replace("\\u0026", "&"), "image", item_id,
                        answers.text(large.get("image_uri"), f"{where}.large_images[0].image_uri"),
                        answers.integer(large.get("width") or image.get("width"), f"{where}.width"),
                        answers.integer(large.get("height") or image.get("height"), f"{where}.height"),
                        answers.text(large.get("format") or image.get("format"), f"{where}.format"))
    return None


def parse_record(raw: Any, path: str = "record") -> HistoryRecord:
    """A ``get_history_by_ids`` entry; :class:`answers.Malformed` when a field the client uses has the wrong shape."""
    entry = answers.mapping(raw, path)
    task = answers.mapping(entry.get("task"), f"{path}.task")
    forecast = answers.mapping(entry.get("forecast_cost_time"), f"{path}.forecast_cost_time")
    queue = answers.mapping(entry.get("queue_info"), f"{path}.queue_info")
    listed = answers.items(entry.get("item_list"), f"{path}.item_list")
    parsed = (parse_item(item, f"{path}.item_list[{index}]") for index, item in enumerate(listed))
    seconds = None
    if forecast:
        seconds = (answers.number(forecast.get("forecast_queue_cost"), f"{path}.forecast_cost_time.queue")
                   + answers.number(forecast.get("forecast_generate_cost"), f"{path}.forecast_cost_time.generate"))
    status = entry.get("status", task.get("status"))
    return HistoryRecord(
        history_record_id=answers.text(entry.get("history_record_id") or task.get("history_id"),
                                       f"{path}.history_record_id"),
        status=answers.integer(status, f"{path}.status"),
        fail_code=answers.text(entry.get("fail_code"), f"{path}.fail_code"),
        fail_message=answers.text(entry.get("fail_msg") or entry.get("fail_starling_message"), f"{path}.fail_msg"),
        items=tuple(item for item in parsed if item is not None),
        total_count=answers.integer(entry.get("total_image_count"), f"{path}.total_image_count"),
        finished_count=answers.integer(entry.get("finished_image_count"), f"{path}.finished_image_count"),
        finish_time=answers.integer(task.get("finish_time") or entry.get("finish_time"), f"{path}.task.finish_time"),
        forecast_seconds=seconds,
        queue_position=answers.integer(queue.get("queue_idx"), f"{path}.queue_info.queue_idx") if queue else None,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass
class _CookieJar:
    """The minimal cookie jar clients rebuild per token. Each token's ids stay fixed: derived from the installation's
    fingerprint when there is one, else the client's webId and a uid_tt drawn once per token for the process."""

    web_id: str
    fingerprint: Fingerprint | None = None
    identities: dict[str, Identity] = field(default_factory=dict)

    def identity(self, token: Token) -> Identity:
        found = self.identities.get(token.account)
        if found is None:
            found = (self.fingerprint.identity(token.account) if self.fingerprint is not None
                     else Identity(self.web_id, secrets.token_hex(16)))
            self.identities[token.account] = found
        return found

    def header(self, token: Token, now: int) -> str:
        identity = self.identity(token)
        uid = identity.uid_tt
        sid = token.value
        guard = quote(f"{sid}|{now}|5184000|Mon, 03-Feb-2025 08:17:09 GMT", safe="")
        return (f"_tea_web_id={identity.web_id}; is_staff_user=false; sid_guard={guard}; uid_tt={uid}; "
                f"uid_tt_ss={uid}; sid_tt={sid}; sessionid={sid}; sessionid_ss={sid}")


LANE_CONNECTIONS = 4


@dataclass
class _Lane:
    """One small connection pool and the callers it admits."""

    http: httpx.AsyncClient
    gate: asyncio.Semaphore
    size: int
    busy: int = 0


MAX_REDIRECTS = 5  # asset hosts (CDNs) redirect; the API never does, and its calls do not follow any


def _lanes(connections: int, transport: httpx.AsyncBaseTransport | None, timeout: httpx.Timeout, *,
           follow_redirects: bool = False) -> list[_Lane]:
    count = max(1, -(-connections // LANE_CONNECTIONS))
    per_lane = max(1, connections // count)
    limits = httpx.Limits(max_connections=per_lane, max_keepalive_connections=per_lane)
    return [_Lane(httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=follow_redirects,
                                    max_redirects=MAX_REDIRECTS, limits=limits),
                  asyncio.Semaphore(per_lane), per_lane) for _ in range(count)]


@asynccontextmanager
async def _pick(lanes: list[_Lane]) -> AsyncIterator[httpx.AsyncClient]:
    """The least busy lane's client, once it has a free connection."""
    lane = min(lanes, key=lambda candidate: candidate.busy / candidate.size)
    lane.busy += 1
    try:
        async with lane.gate:
            yield lane.http
    finally:
        lane.busy -= 1


class JimengClient:
    """Calls to the web API of one region (or of a base URL that stands in for it, like the simulator)."""

    def __init__(self, *, region: Region, versions: ProtocolVersions, web_id: str, base_url: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, limits: CallLimits = DEFAULT_LIMITS,
                 clock: Callable[[], float] = time.time, max_connections: int = 16,
                 download_connections: int = 8, fingerprint: Fingerprint | None = None) -> None:
        self.region = region
        self.limits = limits
        self.versions = versions
        self.web_id = web_id
        self.api_base = (base_url or region.api_base).rstrip("/")
        self.commerce_base = (base_url or region.commerce_base).rstrip("/")
        self._clock = clock
        # With a fingerprint, each token sends its own webId (query and cookie) instead of ``web_id``.
        self._cookies = _CookieJar(web_id, fingerprint)
        self._query = common_query(region, versions, web_id)
        # Small pools, several of them: httpcore checks every idle connection of a pool (a system call each) every
        # time a request starts or ends there, so one pool of sixteen costs several times what four pools of four
        # do. Callers queue in the lanes, not inside httpx, where waiting requests are rescanned as well.
        self._lanes = _lanes(max_connections, transport, limits.timeout)
        # Downloads use lanes of their own: asset hosts differ from the API host.
        self._download_lanes = _lanes(download_connections, transport, limits.timeout, follow_redirects=True)

    async def __aenter__(self) -> JimengClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for lane in (*self._lanes, *self._download_lanes):
            await lane.http.aclose()

    def headers(self, path: str, token: Token) -> dict[str, str]:
        """The headers of one call to ``path`` (Sign covers the path, the platform, the app version and the time)."""
        now = int(self._clock())
        v = self.versions
        return {
            "Accept": "application/json, text/plain, */*",
            "Accept-Encoding": v.accept_encoding,
            "Accept-Language": v.accept_language or self.region.accept_language,
            "App-Sdk-Version": v.app_sdk_version,
            "Appid": str(self.region.aid),
            "Appvr": v.app_version,
            "Cache-Control": v.cache_control,
            "Device-Time": str(now),
            "Lan": self.region.lan,
            "Loc": self.region.loc,
            "Pf": v.platform,
            "Pragma": v.cache_control,
            "Priority": v.priority,
            "Sec-Ch-Ua": v.sec_ch_ua,
            "Sec-Ch-Ua-Mobile": v.sec_ch_ua_mobile,
            "Sec-Ch-Ua-Platform": v.sec_ch_ua_platform,
            "Sec-Fetch-Dest": v.sec_fetch_dest,
            "Sec-Fetch-Mode": v.sec_fetch_mode,
            "Sec-Fetch-Site": v.sec_fetch_site,
            "Sign": web_sign(path, platform=v.platform, app_version=v.app_version, device_time=now),
            "Sign-Ver": v.sign_version,
            "Tdid": "",
            "Content-Type": "application/json",
            "Cookie": self._cookies.header(token, now),
            "Origin": self.region.referer.split("/ai-tool")[0].rstrip("/"),
            "Referer": self.region.referer,
            "User-Agent": v.user_agent,
        }

    async def call(self, path: str, body: Mapping[str, Any], token: Token, *,
                   query: Mapping[str, str] | None = None, request_key: str | None = None) -> Any:
        """POST ``body`` to ``path``; the answer's ``data`` on ``ret == "0"``, else the classified error."""
        commerce = path.startswith("/commerce/")
        url = (self.commerce_base if commerce else self.api_base) + path
        # The credits calls go without the default query, as the web app sends them.
        params = None if commerce else dict(query if query is not None else self._query)
        if params is not None and "webId" in params:
            params["webId"] = self._cookies.identity(token).web_id  # the token's own, like its _tea_web_id
        response = await self._fetch("POST", url, path, request_key, params=params,
                                     content=json.dumps(body, ensure_ascii=False).encode(),
                                     headers=self.headers(path, token))
        if response.status_code != 200:
            rule = classify("http", response.status_code)
            raise error_for(rule, f"{path}: HTTP {response.status_code} ({rule.meaning})",
                            code=str(response.status_code), request_key=request_key,
                            retry_after=_retry_after(response), http_status=response.status_code)
        try:
            payload = json.loads(response.content)
        except (ValueError, RecursionError) as exc:
            raise self.malformed(path, "the answer is not JSON", request_key) from exc
        if not isinstance(payload, Mapping):
            raise self.malformed(path, f"the answer is {answers.kind_of(payload)}, not an object", request_key)
        ret = str(payload.get("ret", ""))
        if ret != "0":
            return self._raise_ret(path, payload, request_key)
        return payload.get("data")

    async def send_raw(self, method: str, url: str, *, params: list[tuple[str, str]] | None = None,
                       headers: Mapping[str, str] | None = None, content: bytes | None = None) -> httpx.Response:
        """Any other call (the ImageX upload flow): the response, read whole within the limits; failures
        classified."""
        query = httpx.QueryParams(tuple(params)) if params else None
        return await self._fetch(method, url, urlsplit(url).path, None, params=query, headers=headers,
                                 content=content)

    async def _fetch(self, method: str, url: str, path: str, request_key: str | None, **request: Any
                     ) -> httpx.Response:
        """One call within the call deadline, its answer read in chunks up to the answer size bound."""
        limits = self.limits
        try:
            async with asyncio.timeout(limits.call_deadline), _pick(self._lanes) as http, \
                    http.stream(method, url, **request) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limits.max_answer_bytes:
                        raise self.malformed(path, f"the answer is larger than {limits.max_answer_bytes} bytes",
                                             request_key)
                # Decoded already (gzip and the like): the copy must not say it is encoded.
                headers = [(k, v) for k, v in response.headers.multi_items()
                           if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
                return httpx.Response(response.status_code, headers=headers, content=bytes(body))
        except TimeoutError as exc:
            raise self._transport_error("timeout", path, request_key, exc,
                                        f"no whole answer within {limits.call_deadline:g} s") from exc
        except httpx.DecodingError as exc:
            raise self.malformed(path, f"the answer cannot be decoded ({exc})", request_key) from exc
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self._transport_error("connect", path, request_key, exc) from exc
        except httpx.TimeoutException as exc:
            raise self._transport_error("timeout", path, request_key, exc) from exc
        except httpx.RequestError as exc:
            raise self._transport_error("connection", path, request_key, exc) from exc

    def malformed(self, path: str, problem: str, request_key: str | None = None) -> APIError:
        """An answer of a shape the client cannot use: the outcome table's ``malformed``."""
        rule = classify("local", "malformed")
        return error_for(rule, f"{path}: malformed answer: {problem}", code="malformed", request_key=request_key)

    def _transport_error(self, kind: str, path: str, request_key: str | None, exc: BaseException,
                         detail: str | None = None) -> APIError:
        rule = classify("transport", kind)
        return error_for(rule, f"{path}: {rule.meaning} ({detail or type(exc).__name__})", code=kind,
                         request_key=request_key)

    def _raise_ret(self, path: str, payload: Mapping[str, Any], request_key: str | None) -> Any:
        ret = str(payload.get("ret"))
        data = payload.get("data")
        fail_code = str(data.get("fail_code")) if isinstance(data, Mapping) and data.get("fail_code") else ""
        source: Source = "ret"
        rule = classify(source, ret)
        errmsg = str(payload.get("errmsg") or "")
        raise error_for(rule, f"{path}: ret {ret} ({rule.meaning}){': ' + errmsg if errmsg else ''}",
                        code=fail_code or ret, request_key=request_key)

    async def submit(self, request: DraftRequest, token: Token, *, request_key: str | None = None) -> Submitted:
        """Send one draft. Idempotent by ``submit_id``: the service answers a repeat with the same record."""
        data = await self.call(request.path, request.body, token, query=request.query, request_key=request_key)
        try:
            aigc = answers.mapping(answers.mapping(data, "data").get("aigc_data"), "data.aigc_data")
            task = answers.mapping(aigc.get("task"), "data.aigc_data.task")
            history_id = answers.text(aigc.get("history_record_id"), "data.aigc_data.history_record_id")
            task_id = answers.text(aigc.get("task_id") or task.get("task_id"), "data.aigc_data.task_id")
            submit_id = answers.text(aigc.get("submit_id") or task.get("submit_id"), "data.aigc_data.submit_id")
        except answers.Malformed as exc:
            raise self.malformed(GENERATE_PATH, str(exc), request_key) from exc
        if not history_id:
            raise self.malformed(GENERATE_PATH, "accepted without a history_record_id", request_key)
        return Submitted(history_id, task_id, submit_id or str(request.body.get("submit_id")))

    async def history(self, token: Token, *, submit_ids: list[str] | None = None,
                      history_ids: list[str] | None = None) -> dict[str, HistoryRecord | None]:
        """Records by submit id or by history id; an id the service does not (yet) know maps to None, and an entry
        that cannot be read to a record whose ``malformed`` says why."""
        ids = submit_ids if submit_ids is not None else history_ids or []
        body = {"submit_ids": ids} if submit_ids is not None else {"history_ids": ids}
        data = await self.call(HISTORY_PATH, body, token)
        try:
            records = answers.mapping(data, "data")
        except answers.Malformed as exc:
            raise self.malformed(HISTORY_PATH, str(exc)) from exc
        found: dict[str, HistoryRecord | None] = {}
        for key in ids:
            raw = records.get(key)
            if raw is None:
                found[key] = None
                continue
            try:
                found[key] = parse_record(raw, f"data.{key}")
            except answers.Malformed as exc:
                found[key] = HistoryRecord(key, 0, malformed=str(exc))
        return found

    async def user_credit(self, token: Token) -> CreditBalance:
        data = await self.call(USER_CREDIT_PATH, {}, token)
        try:
            answer = answers.mapping(data, "data")
            credit = answers.mapping(answer.get("credit"), "data.credit")
            expiring = sum(answers.integer(answers.mapping(c, f"data.expiring_credits[{i}]").get("credit_amount"),
                                           f"data.expiring_credits[{i}].credit_amount")
                           for i, c in enumerate(answers.items(answer.get("expiring_credits"),
                                                               "data.expiring_credits")))
            return CreditBalance(answers.integer(credit.get("gift_credit"), "data.credit.gift_credit"),
                                 answers.integer(credit.get("purchase_credit"), "data.credit.purchase_credit"),
                                 answers.integer(credit.get("vip_credit"), "data.credit.vip_credit"), expiring)
        except answers.Malformed as exc:
            raise self.malformed(USER_CREDIT_PATH, str(exc)) from exc

    async def credit_receive(self, token: Token) -> Any:
        return await self.call(CREDIT_RECEIVE_PATH, {"time_zone": "Asia/Shanghai"}, token)

    @asynccontextmanager
    async def stream(self, url: str) -> AsyncIterator[httpx.Response]:
        """GET an asset URL as a stream (signed URLs need no session cookie)."""
        headers = {"User-Agent": self.versions.user_agent}
        async with _pick(self._download_lanes) as http, http.stream("GET", url, headers=headers) as response:
            yield response
