"""The simulator's HTTP face: a Starlette app whose routes speak the Jimeng web protocol.

Every API call passes the same gate, in this order: injected faults (a dropped connection, an HTTP 5xx), then the
protocol checks the live service makes (version parameters, ``Appvr``, ``Device-Time``, the ``Sign`` header: any
failure is the profile's *permission* error), then the ``sessionid`` cookie (*login*), then the per-account rate
limit. Business errors are HTTP 200 with ``{"ret": "<code>", "errmsg": "...", "data": null}``, as on the live
service. Handlers stay cheap: the stdlib JSON codec, one lock, no per-request rendering (assets render on GET, cached).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from jimeng_batch.errors import ConfigError
from jimeng_batch.protocol import catalog
from jimeng_batch.protocol.signing import web_sign
from jimeng_batch.sim.assets import HIGH_KBPS, PREVIEW_KBPS, asset_signature, render_mp4, render_png
from jimeng_batch.sim.codes import CLAIM_REFUSALS, Concept, Outcome
from jimeng_batch.sim.config import Distribution
from jimeng_batch.sim.imagex import API_VERSION, ImageXError, parse_raw_query
from jimeng_batch.sim.offered import image_config, video_config
from jimeng_batch.sim.records import history_entry, local_items, submit_data
from jimeng_batch.sim.state import Account, SimError, SimState

__all__ = ["build_app"]

GENERATE_PATH = "/mweb/v1/aigc_draft/generate"
HISTORY_PATH = "/mweb/v1/get_history_by_ids"
LOCAL_ITEM_PATH = "/mweb/v1/get_local_item_list"
UPLOAD_TOKEN_PATH = "/mweb/v1/get_upload_token"  # noqa: S105 - a URL path, not a secret
USER_CREDIT_PATH = "/commerce/v1/benefits/user_credit"
CREDIT_RECEIVE_PATH = "/commerce/v1/benefits/credit_receive"
ACCOUNT_INFO_PATH = "/passport/account/info/v2"
IMAGE_CONFIG_PATH = "/mweb/v1/get_common_config"
VIDEO_CONFIG_PATH = "/mweb/v1/video_generate/get_common_config"
ASSETS_PREFIX = "/_sim/assets/"

_SERVICE_IDS = {region.query_region: region.imagex_service_id for region in catalog.REGIONS.values()}
_ASIA_INTERNATIONAL = frozenset(catalog.REGIONS[code].query_region for code in catalog.ASIA_INTERNATIONAL)


class DropConnection(Response):
    """Ends the exchange without a complete answer, so that the client sees a transport error.

    It promises a one-byte body and returns without sending it: ASGI servers answer an incomplete response by
    closing the connection (uvicorn does, and logs it, which
    :func:`jimeng_batch.sim.uvicorn_compat.quiet_dropped_answers` keeps out of the way). The client has the status
    line and headers but no body, and sees the connection drop while it reads: for a submit, exactly a lost answer.
    """

    def __init__(self) -> None:
        super().__init__(b"", status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]})


def _json(payload: Any, status: int = 200) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json")


def _version(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return None


class _Api:
    """Route handlers bound to one SimState."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        config = state.config
        self.min_da = _version(config.effective_min_da_version) or (0,)
        self.min_appvr = _version(config.min_app_version) or (0,)
        self.require_os = config.effective_require_os

    # -- answers -------------------------------------------------------------------------------------------------

    def ok(self, data: Any) -> Response:
        return _json({"ret": "0", "errmsg": "success", "data": data})

    def error(self, concept: Concept, detail: str = "") -> Response:
        return self.refusal(self.state.outcome(concept), detail)

    def refusal(self, result: Outcome, detail: str = "") -> Response:
        """A business error answer: HTTP 200, the code and its message (and the detail)."""
        self.state.count_error(result.ret)
        message = f"{result.errmsg}: {detail}" if detail else result.errmsg
        return _json({"ret": result.ret, "errmsg": message, "data": None})

    def sim_error(self, exc: SimError) -> Response:
        return self.error(exc.concept, exc.detail)

    async def delay(self, distribution: Distribution) -> None:
        if not distribution.is_zero:
            with self.state.lock:
                seconds = distribution.sample(self.state.fault_rng)
            await self.state.sleep(seconds)

    # -- the gate ------------------------------------------------------------------------------------------------

    def protocol_problem(self, request: Request, headers: dict[str, str], *, mweb: bool) -> str | None:
        """What makes the live service answer "permission denied", or None."""
        if mweb:
            query = _query(request.scope)
            da_version = query.get("da_version")
            if not da_version:
                return "da_version query parameter is missing"
            parsed = _version(da_version)
            if parsed is None or parsed < self.min_da:
                minimum = self.state.config.effective_min_da_version
                return f"da_version {da_version} is not supported (minimum {minimum})"
            if self.require_os and not query.get("os"):
                return "os query parameter is missing"
        app_version = headers.get("appvr")
        if not app_version:
            return "Appvr header is missing"
        parsed = _version(app_version)
        if parsed is None or parsed < self.min_appvr:
            return f"Appvr {app_version} is not supported (minimum {self.state.config.min_app_version})"
        platform = headers.get("pf")
        if not platform:
            return "Pf header is missing"
        device_time = headers.get("device-time", "")
        if not device_time.isdigit():
            return "Device-Time header is missing or not unix seconds"
        skew = self.state.config.max_clock_skew_s
        if skew is not None and abs(int(device_time) - self.state.clock()) > skew:
            return "Device-Time is too far from the server time"
        sign = headers.get("sign")
        if not sign:
            return "Sign header is missing"
        expected = web_sign(request.scope["path"], platform=platform, app_version=app_version, device_time=device_time,
                            tdid=headers.get("tdid", ""))
        if not hmac.compare_digest(sign, expected):
            return "Sign does not match"
        return None

    async def gate(self, request: Request, endpoint: str, *, mweb: bool) -> Account | Response:
        """Faults, protocol, login and rate limit; the caller's account, or the response that ends the call."""
        state = self.state
        state.count_request(endpoint)
        faults = state.config.faults
        if state.chance(faults.drop_probability):
            state.count_error("dropped")
            return DropConnection()
        if state.chance(faults.http_error_probability):
            status = state.pick(faults.http_error_statuses)
            state.count_error(f"http_{status}")
            return PlainTextResponse("simulated server error", status_code=status)
        headers = _headers(request.scope)
        problem = self.protocol_problem(request, headers, mweb=mweb)
        if problem is not None:
            return self.error("permission", problem)
        try:
            account = state.account(_cookie(headers.get("cookie", ""), "sessionid"))
            state.check_rate(account)
        except SimError as exc:
            return self.sim_error(exc)
        return account

    async def json_body(self, request: Request) -> Any:
        raw = await request.body()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise SimError("param", "body: not valid JSON") from None

    # -- API endpoints -------------------------------------------------------------------------------------------

    async def generate(self, request: Request) -> Response:
        gate = await self.gate(request, "generate", mweb=True)
        if isinstance(gate, Response):
            return gate
        state = self.state
        try:
            body = await self.json_body(request)
            await self.delay(state.config.latency.submit)
            if state.chance(state.config.faults.busy_probability):
                raise SimError("busy")
            record, _repeat = state.submit(gate, body)
        except SimError as exc:
            return self.sim_error(exc)
        if state.chance(state.config.faults.lost_response_probability):
            state.count_error("lost_response")
            return DropConnection()
        return self.ok(submit_data(record, state.clock()))

    async def history(self, request: Request) -> Response:
        gate = await self.gate(request, "get_history_by_ids", mweb=True)
        if isinstance(gate, Response):
            return gate
        state = self.state
        try:
            body = await self.json_body(request)
            history_ids = _id_list(body, "history_ids")
            submit_ids = _id_list(body, "submit_ids")
            if not history_ids and not submit_ids:
                raise SimError("param", "history_ids: give history_ids or submit_ids")
        except SimError as exc:
            return self.sim_error(exc)
        faults = state.config.faults
        await self.delay(state.config.latency.poll)
        if state.chance(faults.slow_poll_probability):
            await self.delay(faults.slow_poll_delay)
        found = state.lookup(gate, history_ids, submit_ids)
        now = state.clock()
        asset_url = self.asset_url_maker(request, now)
        international = self.international(request)
        return self.ok({key: history_entry(record, now, asset_url, international=international)
                        for key, record in found.items()})

    def international(self, request: Request) -> bool:
        """Answer in the Asia international sites' shape: the live profile, to a request for hk, jp or sg."""
        return self.state.config.profile == "live" and request.query_params.get("region") in _ASIA_INTERNATIONAL

    async def local_item_list(self, request: Request) -> Response:
        """A finished video's download version (protocol reference 2.4): a higher-bitrate file than the preview."""
        gate = await self.gate(request, "get_local_item_list", mweb=True)
        if isinstance(gate, Response):
            return gate
        state = self.state
        try:
            ids = _id_list(await self.json_body(request), "item_id_list")
            if not ids:
                raise SimError("param", "item_id_list: give the ids of the items")
            mode = state.config.faults.local_item_list
            if mode == "error":
                state.count_error("local_item_list")
                raise SimError("param", "get_local_item_list refused (faults.local_item_list)")
        except SimError as exc:
            return self.sim_error(exc)
        await self.delay(state.config.latency.poll)
        records = [record for item_id in ids if (record := state.item(gate, item_id)) is not None]
        asset_url = self.asset_url_maker(request, state.clock())
        return self.ok(local_items(records, asset_url, international=self.international(request),
                                   with_url=mode != "no_url"))

    async def upload_token(self, request: Request) -> Response:
        gate = await self.gate(request, "get_upload_token", mweb=True)
        if isinstance(gate, Response):
            return gate
        service_id = _SERVICE_IDS.get(request.query_params.get("region", "cn"), _SERVICE_IDS["cn"])
        return self.ok(self.state.imagex.issue(gate.token, self.state.clock(), service_id))

    async def user_credit(self, request: Request) -> Response:
        gate = await self.gate(request, "user_credit", mweb=False)
        if isinstance(gate, Response):
            return gate
        data = self.state.credit_info(gate)
        # The live answer also carries the data again as a JSON string, and a signature of it (protocol reference
        # 2.6); clients read `data` only.
        response = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        sign = hmac.new(self.state.asset_secret, response.encode(), "sha256").hexdigest()[:32]
        return _json({"ret": "0", "errmsg": "success", "response": response, "sign": sign, "data": data})

    async def credit_receive(self, request: Request) -> Response:
        gate = await self.gate(request, "credit_receive", mweb=False)
        if isinstance(gate, Response):
            return gate
        try:
            body = await self.json_body(request)
        except SimError:
            body = None
        zone = body.get("time_zone") if isinstance(body, dict) else None
        if not isinstance(zone, str) or not zone:
            return self.refusal(CLAIM_REFUSALS["34010100"], "time_zone: give the time zone of the claim's day")
        refusal = self.state.config.claim_errors.get(gate.token)
        if refusal is not None:
            return self.refusal(CLAIM_REFUSALS[refusal])
        return self.ok(self.state.receive_credit(gate))

    async def account_info(self, request: Request) -> Response:
        if self.state.config.passport_not_found:
            self.state.count_request("account_info")
            self.state.count_error("http_404")
            return PlainTextResponse("404 page not found", status_code=404)
        # Not an mweb call: no version query is checked, but the headers, the Sign and the session are.
        gate = await self.gate(request, "account_info", mweb=False)
        if isinstance(gate, Response):
            return gate
        return self.ok(self.state.account_info(gate))

    async def common_config(self, request: Request) -> Response:
        """The account's catalog: the image models (``get_common_config``) or the video ones."""
        video = request.scope["path"] == VIDEO_CONFIG_PATH
        gate = await self.gate(request, "video_common_config" if video else "common_config", mweb=True)
        if isinstance(gate, Response):
            return gate
        try:
            body = await self.json_body(request)
            if not isinstance(body, dict):
                raise SimError("param", "body: must be a JSON object")
        except SimError as exc:
            return self.sim_error(exc)
        region = _query(request.scope).get("region")
        settings = self.state.config.catalog
        return self.ok(video_config(settings, region) if video else image_config(settings, region))

    # -- ImageX --------------------------------------------------------------------------------------------------

    async def imagex(self, request: Request) -> Response:
        state = self.state
        params = dict(parse_raw_query(request.url.query))
        action = params.get("Action", "")
        state.count_request(f"imagex:{action or '-'}")
        meta: dict[str, Any] = {"RequestId": "", "Action": action, "Version": API_VERSION, "Service": "imagex",
                                "Region": ""}
        try:
            expected_method = {"ApplyImageUpload": "GET", "CommitImageUpload": "POST"}.get(action)
            if expected_method is None:
                raise ImageXError(400, "InvalidAction", f"unknown Action {action!r}")
            if request.method != expected_method:
                raise ImageXError(405, "MethodNotAllowed", f"{action} takes {expected_method}")
            body = await request.body()
            headers = {k.lower(): v for k, v in request.headers.items()}
            creds = state.imagex.verify(method=request.method, raw_query=request.url.query, headers=headers,
                                        body=body, now=state.clock())
            if action == "ApplyImageUpload":
                result = state.imagex.apply(creds, params, request.headers.get("host", ""))
            else:
                result, uri, size = state.imagex.commit(creds, params, body)
                state.count_upload(creds.account_token, uri, size)
        except ImageXError as exc:
            state.count_error(f"imagex_{exc.code}")
            meta["Error"] = {"Code": exc.code, "Message": exc.message}
            return _json({"ResponseMetadata": meta}, status=exc.status)
        return _json({"ResponseMetadata": meta, "Result": result})

    async def upload_bytes(self, request: Request) -> Response:
        state = self.state
        state.count_request("upload")
        try:
            crc = state.imagex.receive(request.path_params["store_uri"], request.headers.get("authorization"),
                                       request.headers.get("content-crc32"), await request.body())
        except ImageXError as exc:
            state.count_error(f"upload_{exc.code}")
            return _json({"code": exc.status, "error_code": exc.code, "message": exc.message}, status=exc.status)
        return _json({"code": 2000, "apiversion": "v1", "message": "Success", "data": {"crc32": crc}})

    # -- assets and stats ----------------------------------------------------------------------------------------

    def asset_url_maker(self, request: Request, now: float) -> Callable[[str], str]:
        base = f"{request.url.scheme}://{request.headers.get('host', '')}{ASSETS_PREFIX}"
        expires = int(now + self.state.config.asset_ttl_s)
        secret = self.state.asset_secret

        def url(name: str) -> str:
            return f"{base}{name}?x-expires={expires}&x-signature={asset_signature(secret, name, expires)}"

        return url

    async def asset(self, request: Request) -> Response:
        state = self.state
        state.count_request("asset")
        name = request.path_params["name"]
        expires_text = request.query_params.get("x-expires", "")
        signature = request.query_params.get("x-signature", "")
        if not expires_text.isdigit() or not hmac.compare_digest(
            signature, asset_signature(state.asset_secret, name, int(expires_text))
        ):
            state.count_error("asset_forbidden")
            return PlainTextResponse("signature does not match", status_code=403)
        if state.clock() > int(expires_text):
            state.count_error("asset_expired")
            return PlainTextResponse("this URL has expired", status_code=403)
        faults = state.config.faults
        if faults.asset_redirect and request.query_params.get("moved") != "1":
            state.count_error("asset_redirect")
            return Response(b"", status_code=302, headers={"location": f"{request.url}&moved=1"})
        if state.chance(faults.asset_error_probability):
            status = state.pick(faults.asset_error_statuses)
            state.count_error(f"asset_http_{status}")
            return PlainTextResponse("simulated asset host error", status_code=status)
        found = state.asset(name)
        if found is None:
            return PlainTextResponse("not found", status_code=404)
        record, index, variant = found
        spec = record.spec
        if spec.kind == "video":
            content = await run_in_threadpool(render_mp4, spec.seed, spec.prompt, spec.width, spec.height,
                                              spec.duration_s or 1, catalog.DEFAULT_FPS,
                                              HIGH_KBPS if variant else PREVIEW_KBPS)
            media_type = "video/mp4"
        else:
            content = await run_in_threadpool(render_png, spec.seed, spec.prompt, index, spec.width, spec.height)
            media_type = "image/png"
        if state.chance(faults.truncated_asset_probability):
            state.count_error("asset_truncated")
            return TruncatedBody(content, media_type)
        state.count_download(len(content))
        return Response(content, media_type=media_type)

    async def set_faults(self, request: Request) -> Response:
        """Change the faults of a running simulator (a test's outage of the asset host, say)."""
        try:
            self.state.set_faults(json.loads(await request.body() or b"{}"))
        except (ValueError, ConfigError) as exc:
            return PlainTextResponse(str(exc), status_code=400)
        return _json({"faults": "changed"})

    async def stats(self, request: Request) -> Response:
        return _json(self.state.stats())


class TruncatedBody(Response):
    """Announces the whole file and sends half of it: the connection closes part-way, as a flaky CDN does."""

    def __init__(self, content: bytes, media_type: str) -> None:
        super().__init__(content, media_type=media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})


def _echo_session(response: Response, request: Request) -> Response:
    """A hostile server's error answer: its errmsg quotes the request's Cookie header, session token and all."""
    try:
        payload = json.loads(bytes(response.body))
    except ValueError:
        return response
    if not isinstance(payload, dict) or payload.get("ret") in (None, "0"):
        return response
    payload["errmsg"] = f"{payload.get('errmsg', '')} (request Cookie: {request.headers.get('cookie', '')})"
    return _json(payload, status=response.status_code)


def _headers(scope: Scope) -> dict[str, str]:
    """The request headers as one dict with lower-case names: cheaper than repeated scans for a handful of reads."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _query(scope: Scope) -> dict[str, str]:
    """The query parameters the gate reads; Starlette's QueryParams costs more than the whole check."""
    raw: bytes = scope["query_string"]
    return dict(parse_raw_query(raw.decode("latin-1"))) if raw else {}


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def _id_list(body: Any, key: str) -> list[str]:
    if not isinstance(body, dict):
        raise SimError("param", "body: must be a JSON object")
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SimError("param", f"{key}: must be a list of id strings")
    return value


class SimApp:
    """The ASGI app: the API paths by a dict lookup (they carry the load), everything else by a Starlette Router.

    Starlette's default middleware stack and per-route exception wrappers cost more than the handlers themselves on
    the hot path, and the simulator must never be the bottleneck of a benchmark; uncaught errors still become a 500
    from uvicorn.
    """

    def __init__(self, state: SimState) -> None:
        self.state = state
        api = _Api(state)
        self._api_routes: dict[str, Callable[[Request], Awaitable[Response]]] = {
            GENERATE_PATH: api.generate,
            HISTORY_PATH: api.history,
            LOCAL_ITEM_PATH: api.local_item_list,
            UPLOAD_TOKEN_PATH: api.upload_token,
            USER_CREDIT_PATH: api.user_credit,
            CREDIT_RECEIVE_PATH: api.credit_receive,
            ACCOUNT_INFO_PATH: api.account_info,
            IMAGE_CONFIG_PATH: api.common_config,
            VIDEO_CONFIG_PATH: api.common_config,
        }
        self._router = Router(
            routes=[
                Route(path, handler, methods=methods)
                for path, handler, methods in (
                    (GENERATE_PATH, api.generate, ["POST"]),  # reached only by other methods: 405
                    (HISTORY_PATH, api.history, ["POST"]),
                    (LOCAL_ITEM_PATH, api.local_item_list, ["POST"]),
                    (UPLOAD_TOKEN_PATH, api.upload_token, ["POST"]),
                    (USER_CREDIT_PATH, api.user_credit, ["POST"]),
                    (CREDIT_RECEIVE_PATH, api.credit_receive, ["POST"]),
                    (ACCOUNT_INFO_PATH, api.account_info, ["POST"]),
                    (IMAGE_CONFIG_PATH, api.common_config, ["POST"]),
                    (VIDEO_CONFIG_PATH, api.common_config, ["POST"]),
                    ("/", api.imagex, ["GET", "POST"]),
                    ("/upload/v1/{store_uri:path}", api.upload_bytes, ["POST", "PUT"]),
                    (ASSETS_PREFIX + "{name}", api.asset, ["GET"]),
                    ("/_sim/stats", api.stats, ["GET"]),
                    ("/_sim/faults", api.set_faults, ["POST"]),
                )
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self._api_routes.get(scope["path"])
            if handler is not None:
                request = Request(scope, receive, send)
                response = await handler(request)
                if self.state.config.faults.echo_session:
                    response = _echo_session(response, request)
                await response(scope, receive, send)
                return
        await self._router(scope, receive, send)


def build_app(state: SimState) -> SimApp:
    """The ASGI app for one simulator state."""
    return SimApp(state)
