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
import re
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
from jimeng_batch.protocol.live_catalog import (
    IMAGE_CONFIG_BODY,
    IMAGE_CONFIG_PATH,
    VIDEO_CONFIG_BODY,
    VIDEO_CONFIG_PATH,
    AccountCatalog,
    OfferedImageModel,
    OfferedVideoModel,
    read_image_models,
    read_video_models,
)
from jimeng_batch.protocol.outcomes import Source, classify, error_for
from jimeng_batch.protocol.signing import web_sign
from jimeng_batch.protocol.tokens import Token, shown_proxy

HISTORY_PATH = "/mweb/v1/get_history_by_ids"
USER_CREDIT_PATH = "/commerce/v1/benefits/user_credit"
CREDIT_RECEIVE_PATH = "/commerce/v1/benefits/credit_receive"
ACCOUNT_INFO_PATH = "/passport/account/info/v2"
CLAIM_TIME_ZONE = "Asia/Shanghai"  # what every client sends with the daily claim (protocol reference 2.6)
UPLOAD_TOKEN_PATH = "/mweb/v1/get_upload_token"  # noqa: S105 - a URL path, not a secret
LOCAL_ITEM_PATH = "/mweb/v1/get_local_item_list"
# When get_local_item_list names its file in no field the client knows, the high-bitrate URL is looked for in the
# answer's text (protocol reference 2.4): the download host v<N>-dreamnia.jimeng.com first, then any
# v<N>-*.jimeng.com host. The preview's vlabvod host is left out: a preview found that way is no better.
_HIGH_BITRATE_PATTERNS = (re.compile(r'https://v[0-9]+-dreamnia\.jimeng\.com/[^"\s\\]+'),
                          re.compile(r'https://v[0-9]+-[a-z0-9.-]*\.jimeng\.com/[^"\s\\]+'))


# Record statuses (protocol reference 2.3).
STATUS_DONE = 50
STATUS_FAILED = 30
STATUS_QUEUED = 20  # submitted: queued, or (queue_info.queue_status 2) already being processed
QUEUE_PROCESSING = 2
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
    forecast_seconds: float | None = None  # the service's forecast: queue time plus generation time
    forecast_queue_seconds: float | None = None  # forecast_cost_time.forecast_queue_cost alone
    queue_position: int | None = None  # queue_info.queue_idx
    queue_length: int | None = None  # queue_info.queue_length
    queue_status: int | None = None  # queue_info.queue_status: 1 queued, 2 processing (the reference infers so)
    malformed: str = ""  # why this entry of an answer could not be read (the others of the answer still are)

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    @property
    def in_queue(self) -> bool:
        """Still waiting in the service's queue: status 20 without queue_info saying it is processing."""
        return self.status == STATUS_QUEUED and self.queue_status != QUEUE_PROCESSING

    def complete(self, kind: str) -> bool:
        """The protocol reference's completion rule (a status alone is not enough)."""
        if self.failed:
            return False
        if kind == "video":
            # A video's item must carry a video URL: its cover picture alone is not the result.
            return self.status == STATUS_DONE and any(item.url and item.kind == "video" for item in self.items)
        return (self.finished_count >= self.total_count > 0 and len(self.items) >= self.total_count
                and self.finish_time > 0)


@dataclass(frozen=True, slots=True)
class CreditBalance:
    """An account's credits, from ``user_credit``."""

    gift: int = 0
    purchase: int = 0
    vip: int = 0
    expiring: int = 0
    expiring_first: int = 0  # unix seconds when the first of the expiring credits expires; 0: none expire

    @property
    def total(self) -> int:
        # The live service has shown gift_credit 0 while expiring_credits held the day's grant; count the larger.
        return max(self.gift, self.expiring) + self.purchase + self.vip


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """What ``/passport/account/info/v2`` says of a session: its user id (present means the session is alive)."""

    user_id: str


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to the daily claim (``credit_receive``)."""

    is_first_receive: bool
    receive_quota: int
    has_popup: bool = False
    receive_inter_days: int = 0

    @property
    def granted(self) -> bool:
        """Credits were given by this claim (a repeat the same day answers ``is_first_receive`` false, quota 0)."""
        return self.is_first_receive and self.receive_quota > 0


def _video_url(entry: Mapping[str, Any], common: Mapping[str, Any], path: str) -> tuple[str, Mapping[str, Any]]:
    """A video item's URL and the ``origin`` object it came from: ``video.transcoded_video`` (the China site),
    ``common_attr.transcoded_video`` (the Asia international sites carry it only there), then the video's
    ``play_url``, ``download_url`` and ``url`` (protocol reference 2.3)."""
    video = answers.mapping(entry.get("video"), f"{path}.video")
    for holder, where in ((video, f"{path}.video"), (common, f"{path}.common_attr")):
        transcoded = answers.mapping(holder.get("transcoded_video"), f"{where}.transcoded_video")
        origin = answers.mapping(transcoded.get("origin"), f"{where}.transcoded_video.origin")
        url = answers.text(origin.get("video_url"), f"{where}.transcoded_video.origin.video_url")
        if url:
            return url, origin
    for name in ("play_url", "download_url", "url"):
        url = answers.text(video.get(name), f"{path}.video.{name}")
        if url:
            return url, {}
    return "", {}


def _cover_url(common: Mapping[str, Any], path: str) -> str:
    """An image item's fallback URL: ``common_attr.cover_url``, else the largest of ``cover_url_map``'s sizes."""
    url = answers.text(common.get("cover_url"), f"{path}.common_attr.cover_url")
    if url:
        return url
    covers = answers.mapping(common.get("cover_url_map"), f"{path}.common_attr.cover_url_map")
    # Keys are sizes ("4096", "2400", "1080", ...): the largest first; a key that is not a number comes last.
    for size in sorted(covers, key=lambda key: int(key) if str(key).isdigit() and len(str(key)) < 9 else -1,
                       reverse=True):
        url = answers.text(covers[size], f"{path}.common_attr.cover_url_map.{size}")
        if url:
            return url
    return ""


def parse_item(raw: Any, path: str = "item") -> Item | None:
    """One item of ``item_list``: an image's large image, or a video's URL (with the reference's fallbacks)."""
    entry = answers.mapping(raw, path)
    common = answers.mapping(entry.get("common_attr"), f"{path}.common_attr")
    item_id = answers.text(common.get("id") or common.get("item_id") or entry.get("item_id") or entry.get("id")
                           or common.get("local_item_id") or entry.get("local_item_id"), f"{path}.common_attr.id")
    url, origin = _video_url(entry, common, path)
    if url:
        video = answers.mapping(entry.get("video"), f"{path}.video")
        return Item(url, "video", item_id, "",
                    answers.integer(origin.get("width") or video.get("width"), f"{path}.video.width"),
                    answers.integer(origin.get("height") or video.get("height"), f"{path}.video.height"),
                    answers.text(origin.get("format"), f"{path}.video.format") or "mp4")
    image = entry.get("image")
    if isinstance(image, Mapping):
        where = f"{path}.image"
        large = answers.first(image.get("large_images"), f"{where}.large_images")
        url = (answers.text(large.get("image_url"), f"{where}.large_images[0].image_url")
               or _cover_url(common, path))
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
    seconds = queue_seconds = None
    if forecast:
        queue_seconds = answers.number(forecast.get("forecast_queue_cost"), f"{path}.forecast_cost_time.queue")
        seconds = queue_seconds + answers.number(forecast.get("forecast_generate_cost"),
                                                 f"{path}.forecast_cost_time.generate")
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
        forecast_queue_seconds=queue_seconds,
        queue_position=answers.integer(queue.get("queue_idx"), f"{path}.queue_info.queue_idx") if queue else None,
        queue_length=answers.integer(queue.get("queue_length"), f"{path}.queue_info.queue_length") if queue else None,
        queue_status=answers.integer(queue.get("queue_status"), f"{path}.queue_info.queue_status") if queue else None,
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
           follow_redirects: bool = False, proxy: str | None = None) -> list[_Lane]:
    count = max(1, -(-connections // LANE_CONNECTIONS))
    per_lane = max(1, connections // count)
    limits = httpx.Limits(max_connections=per_lane, max_keepalive_connections=per_lane)
    return [_Lane(httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=follow_redirects,
                                    max_redirects=MAX_REDIRECTS, limits=limits, proxy=proxy),
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
                 download_connections: int = 8, proxy: str | None = None,
                 fingerprint: Fingerprint | None = None) -> None:
        self.region = region
        self.proxy = proxy  # every call of this client goes through it (a token's own proxy): never shown whole
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
        self._lanes = _lanes(max_connections, transport, limits.timeout, proxy=proxy)
        # Downloads use lanes of their own: asset hosts differ from the API host.
        self._download_lanes = _lanes(download_connections, transport, limits.timeout, follow_redirects=True,
                                      proxy=proxy)

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
        # Through a token's proxy, the proxy may be what cannot be reached: say so (never its credentials).
        via = f" through the proxy {shown_proxy(self.proxy)}" if self.proxy else ""
        return error_for(rule, f"{path}: {rule.meaning}{via} ({detail or type(exc).__name__})", code=kind,
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

    async def high_bitrate_url(self, token: Token, item_id: str, *, request_key: str | None = None) -> str:
        """The download version of a finished video item (``get_local_item_list``, protocol reference 2.4): its URL
        from the answer's item fields first, then from a URL pattern; "" when the answer names none."""
        body = {"item_id_list": [item_id], "pack_item_opt": {"scene": 1, "need_data_integrity": True},
                "is_for_video_download": True}
        data = await self.call(LOCAL_ITEM_PATH, body, token, request_key=request_key)
        try:
            answer = answers.mapping(data, "data")
            field_name = "item_list" if answer.get("item_list") is not None else "local_item_list"
            for index, raw in enumerate(answers.items(answer.get(field_name), f"data.{field_name}")):
                item = parse_item(raw, f"data.{field_name}[{index}]")
                if item is not None and item.kind == "video" and item.item_id in ("", item_id):
                    return item.url
        except answers.Malformed as exc:
            raise self.malformed(LOCAL_ITEM_PATH, str(exc), request_key) from exc
        text = json.dumps(data, ensure_ascii=False)
        for pattern in _HIGH_BITRATE_PATTERNS:
            found = pattern.search(text)
            if found is not None and len(found.group(0)) <= answers.MAX_TEXT:
                return found.group(0)
        return ""

    async def user_credit(self, token: Token) -> CreditBalance:
        data = await self.call(USER_CREDIT_PATH, {}, token)
        try:
            answer = answers.mapping(data, "data")
            credit = answers.mapping(answer.get("credit"), "data.credit")
            expiring = 0
            expiry_times: list[int] = []
            for i, raw in enumerate(answers.items(answer.get("expiring_credits"), "data.expiring_credits")):
                entry = answers.mapping(raw, f"data.expiring_credits[{i}]")
                amount = answers.integer(entry.get("credit_amount"), f"data.expiring_credits[{i}].credit_amount")
                try:
                    expires = answers.integer(entry.get("expire_time"), f"data.expiring_credits[{i}].expire_time")
                except answers.Malformed:
                    expires = 0  # only a hint of when the day's grant was claimed: unknown, not a failed balance
                expiring += amount
                if amount > 0 and expires > 0:
                    expiry_times.append(expires)
            return CreditBalance(answers.integer(credit.get("gift_credit"), "data.credit.gift_credit"),
                                 answers.integer(credit.get("purchase_credit"), "data.credit.purchase_credit"),
                                 answers.integer(credit.get("vip_credit"), "data.credit.vip_credit"), expiring,
                                 min(expiry_times, default=0))
        except answers.Malformed as exc:
            raise self.malformed(USER_CREDIT_PATH, str(exc)) from exc

    async def credit_receive(self, token: Token) -> Claim:
        """The daily claim. A claim made already today is no error: it answers ``is_first_receive`` false."""
        data = await self.call(CREDIT_RECEIVE_PATH, {"time_zone": CLAIM_TIME_ZONE}, token)
        try:
            answer = answers.mapping(data, "data")
            return Claim(answers.flag(answer.get("is_first_receive"), "data.is_first_receive"),
                         answers.integer(answer.get("receive_quota"), "data.receive_quota"),
                         answers.flag(answer.get("has_popup"), "data.has_popup"),
                         answers.integer(answer.get("receive_inter_days"), "data.receive_inter_days"))
        except answers.Malformed as exc:
            raise self.malformed(CREDIT_RECEIVE_PATH, str(exc)) from exc

    async def account_info(self, token: Token) -> AccountInfo:
        """The liveness check (protocol reference 1.4): the session's user id; an answer without one is malformed.

        An expired session is the login error; a host without this path (the SG host) answers HTTP 404."""
        data = await self.call(ACCOUNT_INFO_PATH, {}, token, query={**self._query, "account_sdk_source": "web"})
        try:
            user_id = answers.text(answers.mapping(data, "data").get("user_id"), "data.user_id")
        except answers.Malformed as exc:
            raise self.malformed(ACCOUNT_INFO_PATH, str(exc)) from exc
        if not user_id:
            raise self.malformed(ACCOUNT_INFO_PATH, "data.user_id: missing (the session is not known as alive)")
        return AccountInfo(user_id)

    async def probe(self, token: Token) -> None:
        """One signed call that costs nothing, sent with this client's protocol constants and query: it raises what
        the service says of them (``3018 permission denied`` for stale ones) before anything is spent. It is the
        image catalogue's call (``get_common_config``), which the web app makes on every page load; its answer is
        not read here (``image_models`` does)."""
        await self.call(IMAGE_CONFIG_PATH, IMAGE_CONFIG_BODY, token)

    async def image_models(self, token: Token) -> tuple[OfferedImageModel, ...]:
        """The image models this account is offered (``get_common_config``; protocol reference 4.1)."""
        data = await self.call(IMAGE_CONFIG_PATH, IMAGE_CONFIG_BODY, token)
        try:
            return read_image_models(data)
        except answers.Malformed as exc:
            raise self.malformed(IMAGE_CONFIG_PATH, str(exc)) from exc

    async def video_models(self, token: Token) -> tuple[OfferedVideoModel, ...]:
        """The video models this account is offered (``video_generate/get_common_config``)."""
        data = await self.call(VIDEO_CONFIG_PATH, VIDEO_CONFIG_BODY, token)
        try:
            return read_video_models(data)
        except answers.Malformed as exc:
            raise self.malformed(VIDEO_CONFIG_PATH, str(exc)) from exc

    async def account_catalog(self, token: Token) -> AccountCatalog:
        """Both catalogues of this account: what it may generate, with what."""
        return AccountCatalog(await self.image_models(token), await self.video_models(token))

    @asynccontextmanager
    async def stream(self, url: str) -> AsyncIterator[httpx.Response]:
        """GET an asset URL as a stream (signed URLs need no session cookie)."""
        headers = {"User-Agent": self.versions.user_agent}
        async with _pick(self._download_lanes) as http, http.stream("GET", url, headers=headers) as response:
            yield response
