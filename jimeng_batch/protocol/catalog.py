"""What the service offers, as data, in one place: models, regions, ratios, sizes, durations, versions, costs.

Sources: the API document (the contract; its model tables, regions, query defaults and example drafts) and the
protocol reference (what the live service has been seen to do: newer model keys, the image_ratio codes and pixel
sizes most clients agree on, the international hosts, the current version constants). Where they disagree, the
document's shapes are kept and the live values are offered as the default ``live`` protocol profile.

Nothing here does I/O. Every other module looks things up here instead of keeping its own copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

JobType = Literal["image", "image_to_image", "video"]
JOB_TYPES: tuple[JobType, ...] = ("image", "image_to_image", "video")

# --------------------------------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Region:
    """One region of the service and everything that differs between regions."""

    code: str  # what users write in manifests
    query_region: str  # the `region` query parameter
    aid: int  # query `aid`, header `Appid`, body `http_common_info.aid`
    api_base: str  # mweb and passport calls
    commerce_base: str  # /commerce/ calls (credits)
    referer: str
    imagex_base: str
    imagex_service_id: str
    aws_region: str
    lan: str
    loc: str
    sends_web_id: bool  # international requests omit webId
    accept_language: str  # the browser's Accept-Language there (a profile's accept_language replaces it)


_CN_AID = 513695
_INTL_AID = 513641

REGIONS: Mapping[str, Region] = MappingProxyType(
    {
        "cn": Region(
            "cn", "cn", _CN_AID, "https://jimeng.jianying.com", "https://jimeng.jianying.com",
            "https://jimeng.jianying.com/ai-tool/generate", "https://imagex.bytedanceapi.com", "tb4s082cfz",
            "cn-north-1", "zh-Hans", "cn", True, "zh-CN,zh;q=0.9",
        ),
        # The API document names a third-party proxy for the international site; the service's own hosts are the
        # default so that a session token only ever goes where the user chose to send it.
        "us": Region(
            "us", "US", _INTL_AID, "https://dreamina-api.us.capcut.com", "https://commerce.us.capcut.com",
            "https://dreamina.capcut.com/", "https://imagex16-normal-us-ttp.capcutapi.us", "wopfjsm1ax",
            "us-east-1", "en", "us", False, "en-US,en;q=0.9",
        ),
        "hk": Region(
            "hk", "HK", _INTL_AID, "https://mweb-api-sg.capcut.com", "https://commerce-api-sg.capcut.com",
            "https://dreamina.capcut.com/", "https://imagex-normal-sg.capcutapi.com", "wopfjsm1ax",
            "ap-southeast-1", "en", "hk", False, "en-US,en;q=0.9",
        ),
        "jp": Region(
            "jp", "JP", _INTL_AID, "https://mweb-api-sg.capcut.com", "https://commerce-api-sg.capcut.com",
            "https://dreamina.capcut.com/", "https://imagex-normal-sg.capcutapi.com", "wopfjsm1ax",
            "ap-southeast-1", "ja", "jp", False, "ja-JP,ja;q=0.9",
        ),
        "sg": Region(
            "sg", "SG", _INTL_AID, "https://mweb-api-sg.capcut.com", "https://commerce-api-sg.capcut.com",
            "https://dreamina.capcut.com/", "https://imagex-normal-sg.capcutapi.com", "wopfjsm1ax",
            "ap-southeast-1", "en", "sg", False, "en-US,en;q=0.9",
        ),
    }
)
DEFAULT_REGION = "cn"
ALL_REGIONS = frozenset(REGIONS)
_INTL = frozenset({"us", "hk", "jp", "sg"})
_ASIA_INTL = frozenset({"hk", "jp", "sg"})
# The Asia international sites: their video items carry the URL only under common_attr (protocol reference 2.3).
ASIA_INTERNATIONAL = _ASIA_INTL

# --------------------------------------------------------------------------------------------------------------
# Protocol constants: the versions sent in queries, headers and drafts, and the browser's headers. The live service
# changes them; a stale one gives ret 3018 (permission denied), and headers unlike a browser's invite risk control
# (4013). So they are in one table, overridable without a release (`protocol:` in a manifest, a protocol file,
# JIMENG_PROTOCOL_<KEY>, --protocol KEY=VALUE: protocol/constants.py resolves them) and importable from a request
# captured in a browser (protocol/capture.py).
# --------------------------------------------------------------------------------------------------------------

# A Chrome 132 on Windows, as in the protocol reference's capture (sec-ch-ua) and the clients' FAKE_HEADERS.
CHROME_USER_AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                     "Chrome/132.0.0.0 Safari/537.36")
CHROME_SEC_CH_UA = '"Not A(Brand";v="8", "Chromium";v="132", "Google Chrome";v="132"'


@dataclass(frozen=True, slots=True)
class ProtocolVersions:
    """The constants sent in queries, headers and drafts."""

    da_version: str
    web_version: str
    app_version: str  # header Appvr; part of the Sign
    draft_version: str  # draft_content.version
    platform: str = "7"  # header Pf; part of the Sign
    sign_version: str = "1"  # header Sign-Ver
    app_sdk_version: str = "48.0.0"
    aigc_features: str = "app_lip_sync"
    os: str = "windows"  # a missing `os` gives 3018 on the live service
    web_id: str | None = None  # None: one per installation and token (protocol/fingerprint.py); plans show a stand-in
    # The browser's headers (protocol reference 1.4).
    user_agent: str = CHROME_USER_AGENT
    sec_ch_ua: str = CHROME_SEC_CH_UA
    sec_ch_ua_mobile: str = "?0"
    sec_ch_ua_platform: str = '"Windows"'
    accept_language: str | None = None  # None: the region's (Region.accept_language)
    # What the HTTP layer can decode: a browser also offers br and zstd, but an answer in either would be unreadable.
    accept_encoding: str = "gzip, deflate"
    sec_fetch_site: str = "same-origin"
    sec_fetch_mode: str = "cors"
    sec_fetch_dest: str = "empty"
    cache_control: str = "no-cache"  # also sent as Pragma, as the browser does
    priority: str = "u=1, i"

    def with_overrides(self, overrides: Mapping[str, object]) -> ProtocolVersions:
        return replace(self, **{k: str(v) for k, v in overrides.items() if k in PROTOCOL_FIELDS})


PROTOCOL_PROFILES: Mapping[str, ProtocolVersions] = MappingProxyType(
    {
        # The newest constants the protocol reference records: da_version 3.3.21 (the newest a working client
        # sends), web_version 7.5.0 and Appvr 8.4.0 (required since 2026-01), and the captured draft version.
        "live": ProtocolVersions(da_version="3.3.21", web_version="7.5.0", app_version="8.4.0",
                                 draft_version="3.3.9"),
        # The API document's values, as in its examples.
        "document": ProtocolVersions(da_version="3.3.2", web_version="7.5.0", app_version="8.4.0",
                                     draft_version="3.3.2"),
    }
)
DEFAULT_PROTOCOL_PROFILE = "live"
PROTOCOL_FIELDS: tuple[str, ...] = (
    "da_version", "web_version", "app_version", "draft_version", "platform", "sign_version", "app_sdk_version",
    "aigc_features", "os", "web_id", "user_agent", "sec_ch_ua", "sec_ch_ua_mobile", "sec_ch_ua_platform",
    "accept_language", "accept_encoding", "sec_fetch_site", "sec_fetch_mode", "sec_fetch_dest", "cache_control",
    "priority",
)
# What each constant may be (a regular expression matched whole). Versions are dotted numbers; header values are
# printable ASCII without line breaks (a header cannot carry anything else, and a line break would add headers).
_VERSION = r"[0-9]+(\.[0-9]+)*"
_HEADER_TEXT = r"[\x20-\x7e]{1,512}"
PROTOCOL_VALUE_PATTERNS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "da_version": (_VERSION, "a dotted version like 3.3.21"),
        "web_version": (_VERSION, "a dotted version like 7.5.0"),
        "app_version": (_VERSION, "a dotted version like 8.4.0"),
        "draft_version": (_VERSION, "a dotted version like 3.3.9"),
        "platform": (r"[0-9]{1,4}", "a number like 7"),
        "sign_version": (r"[0-9]{1,4}", "a number like 1"),
        "app_sdk_version": (_VERSION, "a dotted version like 48.0.0"),
        "aigc_features": (r"[A-Za-z0-9_,.-]{1,200}", "feature names like app_lip_sync"),
        "os": (r"[A-Za-z0-9_.-]{1,40}", "an os name like windows"),
        "web_id": (r"[1-9][0-9]{15,19}", "a webId of 16 to 20 digits, like the web app's 19"),
        **{name: (_HEADER_TEXT, "header text: printable ASCII, at most 512 characters, no line breaks")
           for name in ("user_agent", "sec_ch_ua", "sec_ch_ua_mobile", "sec_ch_ua_platform", "accept_language",
                        "accept_encoding", "sec_fetch_site", "sec_fetch_mode", "sec_fetch_dest", "cache_control",
                        "priority")},
    }
)

# Fixed values of the draft tree (the document's examples).
IMAGE_DRAFT_MIN_VERSION = "3.0.2"
BLEND_MULTI_IMAGE_MIN_VERSION = "3.2.9"  # blend.min_version when two or more references are sent
VIDEO_DRAFT_MIN_VERSION = "3.0.5"
VIDEO_COMPONENT_MIN_VERSION = "1.0.0"
VIDEO_INPUT_MIN_VERSION = "3.0.5"
CREATED_PLATFORM = 3
VIDEO_MODE_NORMAL = 2
BLEND_PROMPT_MARK = "##"  # the prompt carries one mark per reference plus one (the document: "####" for one image)

# --------------------------------------------------------------------------------------------------------------
# Ratios and sizes
# --------------------------------------------------------------------------------------------------------------

# `image_ratio` codes (the clients' consensus, confirmed by a capture: 16:9 -> 3 at 2560x1440).
IMAGE_RATIO_CODES: Mapping[str, int] = MappingProxyType(
    {"1:1": 1, "3:4": 2, "16:9": 3, "4:3": 4, "9:16": 5, "2:3": 6, "3:2": 7, "21:9": 8}
)
IMAGE_RATIOS: tuple[str, ...] = tuple(IMAGE_RATIO_CODES)
IMAGE_RESOLUTIONS: tuple[str, ...] = ("1k", "2k", "4k")

# Pixel sizes by size family and resolution. 4.x/5.x use the 1024-based 1k table, 3.x and older the 1328-based one;
# 2k is the same everywhere; 4k follows the variant most sources agree on.
_SIZES_2K = {
    "1:1": (2048, 2048), "4:3": (2304, 1728), "3:4": (1728, 2304), "16:9": (2560, 1440), "9:16": (1440, 2560),
    "3:2": (2496, 1664), "2:3": (1664, 2496), "21:9": (3024, 1296),
}
_SIZES_4K = {
    "1:1": (4096, 4096), "4:3": (4693, 3520), "3:4": (3520, 4693), "16:9": (5404, 3040), "9:16": (3040, 5404),
    "3:2": (4992, 3328), "2:3": (3328, 4992), "21:9": (6197, 2656),
}
IMAGE_SIZES: Mapping[tuple[str, str], Mapping[str, tuple[int, int]]] = MappingProxyType(
    {
        ("v4", "1k"): {
            "1:1": (1024, 1024), "4:3": (1024, 768), "3:4": (768, 1024), "16:9": (1024, 576), "9:16": (576, 1024),
            "3:2": (1024, 682), "2:3": (682, 1024), "21:9": (1195, 512),
        },
        ("v3", "1k"): {
            "1:1": (1328, 1328), "4:3": (1472, 1104), "3:4": (1104, 1472), "16:9": (1664, 936), "9:16": (936, 1664),
            # 21:9: one source has 2016x846, another 2016x864; only 864 is 21:9.
            "3:2": (1584, 1056), "2:3": (1056, 1584), "21:9": (2016, 864),
        },
        ("v4", "2k"): _SIZES_2K,
        ("v3", "2k"): _SIZES_2K,
        ("v4", "4k"): _SIZES_4K,
        ("v3", "4k"): _SIZES_4K,
    }
)

VIDEO_ASPECT_RATIOS: tuple[str, ...] = ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16")
VIDEO_RESOLUTIONS: tuple[str, ...] = ("720p", "1080p")
VIDEO_FPS: tuple[int, ...] = (24,)

# Seeds: the document draws them from 2500000000 + [0, 1e8).
SEED_BASE = 2_500_000_000
SEED_SPAN = 100_000_000

DEFAULT_SAMPLE_STRENGTH = 0.5
DEFAULT_REFERENCE_STRENGTH = 0.5
DEFAULT_IMAGE_RATIO = "1:1"
DEFAULT_IMAGE_RESOLUTION = "2k"
DEFAULT_VIDEO_ASPECT_RATIO = "16:9"
DEFAULT_VIDEO_RESOLUTION = "720p"
DEFAULT_VIDEO_DURATION = 5
DEFAULT_FPS = 24
# Images per text-to-image or image-to-image request when the draft asks for no number (sends no gen_count): the
# live service's default (protocol reference 2.2, inferred from what clients sending nothing get back).
DEFAULT_IMAGES_PER_REQUEST = 4

# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageModel:
    """An image model: its user-facing name, the key the service wants, and what it supports."""

    name: str
    key: str
    resolutions: tuple[str, ...]
    size_family: str  # which pixel-size table its 1k uses ("v4" or "v3")
    regions: frozenset[str]
    cost: Mapping[str, float]  # estimated credits per request, by resolution
    note: str = ""
    # gen_option.gen_count it accepts: 1 to this (protocol reference 2.2: 8 for 5.0 Lite, else 4).
    max_images: int = DEFAULT_IMAGES_PER_REQUEST
    # Whether core_param.intelligent_ratio may be true (the model picks the ratio): 4.x and 5.0 only (2.2).
    intelligent_ratio: bool = False
    kind: Literal["image"] = "image"


@dataclass(frozen=True, slots=True)
class VideoModel:
    """A video model: name, key, the commerce benefit it is billed under, and its durations and resolutions."""

    name: str
    key: str
    benefit_type: str
    durations: tuple[int, ...]  # seconds
    resolutions: tuple[str, ...]
    regions: frozenset[str]
    cost_per_second: Mapping[str, float]  # estimated credits per second of video, by resolution
    note: str = ""
    kind: Literal["video"] = "video"
    # The live service refuses its submits from a plain HTTP client (ret 1019 "shark not pass"): it wants an anti-bot
    # a_bogus made by the web page's own script in a browser (protocol reference 3). Runs refuse it unless told.
    needs_a_bogus: bool = False


A_BOGUS_REASON = ("the live service refuses it from a plain HTTP client (ret 1019 \"shark not pass\": it needs an "
                  "anti-bot a_bogus made by the web page in a browser)")


def needs_a_bogus(model: ImageModel | VideoModel) -> bool:
    """Whether the live service refuses ``model`` to clients that cannot make a browser's a_bogus."""
    return isinstance(model, VideoModel) and model.needs_a_bogus


Model = ImageModel | VideoModel

_R124 = ("1k", "2k", "4k")
_R12 = ("1k", "2k")
_COST_V4 = MappingProxyType({"1k": 1.0, "2k": 1.0, "4k": 2.0})
_COST_V5 = MappingProxyType({"1k": 2.0, "2k": 2.0, "4k": 4.0})
_COST_OLD = MappingProxyType({"1k": 1.0, "2k": 1.0})

IMAGE_MODELS: tuple[ImageModel, ...] = (
    ImageModel("jimeng-5.0-pro", "high_aes_general_v50p_large", _R124, "v4", frozenset({"cn"}), _COST_V5,
               intelligent_ratio=True),
    ImageModel("jimeng-5.0", "high_aes_general_v50", ("2k", "4k"), "v4", frozenset({"cn"}) | _ASIA_INTL, _COST_V5,
               "5.0 Lite", max_images=8, intelligent_ratio=True),
    ImageModel("jimeng-4.7", "high_aes_general_v43", _R124, "v4", frozenset({"cn"}), _COST_V4, intelligent_ratio=True),
    ImageModel("jimeng-4.6", "high_aes_general_v42", _R124, "v4", frozenset({"cn"}) | _ASIA_INTL, _COST_V4,
               intelligent_ratio=True),
    ImageModel("jimeng-4.5", "high_aes_general_v40l", _R124, "v4", ALL_REGIONS, _COST_V4, intelligent_ratio=True),
    ImageModel("jimeng-4.1", "high_aes_general_v41", _R124, "v4", ALL_REGIONS, _COST_V4, intelligent_ratio=True),
    ImageModel("jimeng-4.0", "high_aes_general_v40", _R124, "v4", ALL_REGIONS, _COST_V4, "the document's newest",
               intelligent_ratio=True),
    ImageModel("jimeng-3.1", "high_aes_general_v30l_art_fangzhou:general_v3.0_18b", _R12, "v3", frozenset({"cn"}),
               _COST_OLD),
    ImageModel("jimeng-3.0", "high_aes_general_v30l:general_v3.0_18b", _R12, "v3", ALL_REGIONS, _COST_OLD),
    ImageModel("jimeng-2.1", "high_aes_general_v21_L:general_v2.1_L", _R12, "v3", frozenset({"cn"}), _COST_OLD,
               "possibly retired upstream"),
    ImageModel("jimeng-2.0-pro", "high_aes_general_v20_L:general_v2.0_L", _R12, "v3", frozenset({"cn"}), _COST_OLD,
               "possibly retired upstream"),
    ImageModel("jimeng-2.0", "high_aes_general_v20:general_v2.0", _R12, "v3", frozenset({"cn"}), _COST_OLD,
               "possibly retired upstream"),
    ImageModel("jimeng-1.4", "high_aes_general_v14:general_v1.4", _R12, "v3", frozenset({"cn"}), _COST_OLD,
               "possibly retired upstream"),
    ImageModel("jimeng-xl-pro", "text2img_xl_sft", _R12, "v3", frozenset({"cn"}), _COST_OLD,
               "possibly retired upstream"),
    ImageModel("nanobanana", "external_model_gemini_flash_image_v25", _R12, "v4", _INTL, _COST_V4,
               "international only"),
    ImageModel("nanobananapro", "dreamina_image_lib_1", _R124, "v4", _INTL, _COST_V5, "international only"),
)

_V720_1080 = ("720p", "1080p")
_BENEFIT_V3 = "basic_video_operation_vgfm_v_three"
_VCOST_BASIC = MappingProxyType({"720p": 2.0, "1080p": 3.0})
_VCOST_PRO = MappingProxyType({"720p": 4.0, "1080p": 6.0})

VIDEO_MODELS: tuple[VideoModel, ...] = (
    VideoModel("jimeng-video-seedance-2.0", "dreamina_seedance_40_pro", "dreamina_video_seedance_20_pro",
               tuple(range(4, 16)), _V720_1080, frozenset({"cn"}), _VCOST_PRO,
               "needs a browser-made a_bogus on the live service (ret 1019)", needs_a_bogus=True),
    VideoModel("jimeng-video-seedance-2.0-fast", "dreamina_seedance_40", "dreamina_seedance_20_fast",
               tuple(range(4, 16)), _V720_1080, frozenset({"cn"}), _VCOST_BASIC,
               "needs a browser-made a_bogus on the live service (ret 1019)", needs_a_bogus=True),
    VideoModel("jimeng-video-3.5-pro", "dreamina_ic_generate_video_model_vgfm_3.5_pro",
               "dreamina_video_seedance_15_pro", (5, 10, 12), _V720_1080, ALL_REGIONS, _VCOST_PRO, "Seedance 1.5 pro"),
    VideoModel("jimeng-video-3.0-pro", "dreamina_ic_generate_video_model_vgfm_3.0_pro", _BENEFIT_V3,
               (5, 10), _V720_1080, frozenset({"cn"}) | _ASIA_INTL, _VCOST_PRO),
    VideoModel("jimeng-video-3.0", "dreamina_ic_generate_video_model_vgfm_3.0", _BENEFIT_V3,
               (5, 10), _V720_1080, ALL_REGIONS, _VCOST_BASIC),
    VideoModel("jimeng-video-3.0-fast", "dreamina_ic_generate_video_model_vgfm_3.0_fast", _BENEFIT_V3,
               (5, 10), _V720_1080, frozenset({"cn"}) | _ASIA_INTL, _VCOST_BASIC),
    VideoModel("jimeng-video-2.0-pro", "dreamina_ic_generate_video_model_vgfm1.0", _BENEFIT_V3,
               (5,), ("720p",), frozenset({"cn"}), _VCOST_BASIC),
    VideoModel("jimeng-video-2.0", "dreamina_ic_generate_video_model_vgfm_lite", _BENEFIT_V3,
               (5,), ("720p",), frozenset({"cn"}), _VCOST_BASIC),
)

# The most images any model makes per request (the manifest schema's upper bound; each model has its own).
MAX_IMAGES_PER_REQUEST = max(m.max_images for m in IMAGE_MODELS)
INTELLIGENT_RATIO_MODELS: tuple[str, ...] = tuple(m.name for m in IMAGE_MODELS if m.intelligent_ratio)

DEFAULT_IMAGE_MODEL = "jimeng-4.0"
DEFAULT_VIDEO_MODEL = "jimeng-video-3.0"

ALL_MODELS: tuple[Model, ...] = (*IMAGE_MODELS, *VIDEO_MODELS)
_BY_NAME: dict[str, Model] = {m.name: m for m in ALL_MODELS}
_BY_KEY: dict[str, Model] = {m.key: m for m in ALL_MODELS}
MODEL_NAMES: tuple[str, ...] = tuple(_BY_NAME)
MODEL_KEYS: tuple[str, ...] = tuple(_BY_KEY)


def find_model(name_or_key: str) -> Model | None:
    """The model named by its user-facing name or by its raw key, or None."""
    return _BY_NAME.get(name_or_key) or _BY_KEY.get(name_or_key)


def model_kind_for(job_type: JobType) -> Literal["image", "video"]:
    return "video" if job_type == "video" else "image"


def count_options(model: ImageModel) -> tuple[int, ...]:
    """The numbers of outputs a request of this model may ask for (``images``: 1 to its ``max_images``), what an
    account's own catalog (`get_common_config`) lists per model as ``generate_count_options``."""
    return tuple(range(1, model.max_images + 1))


def offers_intelligent_ratio(model: ImageModel) -> bool:
    """Whether this model's drafts may leave the ratio to it (``intelligent_ratio: true``; 4.x and 5.x)."""
    return model.intelligent_ratio


def image_size(model: ImageModel, resolution: str, ratio: str) -> tuple[int, int]:
    """Width and height in pixels of an image of this model at this resolution and ratio."""
    return IMAGE_SIZES[(model.size_family, resolution)][ratio]


# --------------------------------------------------------------------------------------------------------------
# Query-string descriptors
# --------------------------------------------------------------------------------------------------------------

BABI_SCENARIO = "image_video_generation"


@dataclass(frozen=True, slots=True)
class CostTable:
    """Estimated credits: the catalog's figures with the manifest's overrides on top.

    An override is a number (for every resolution) or a mapping by resolution. For image models it is credits per
    request; for video models, credits per second of video.
    """

    overrides: Mapping[str, float | Mapping[str, float]] = field(default_factory=dict)

    def _override(self, model: Model, resolution: str) -> float | None:
        for name in (model.name, model.key):
            value = self.overrides.get(name)
            if isinstance(value, (int, float)):
                return float(value)
            if isinstance(value, Mapping) and resolution in value:
                return float(value[resolution])
        return None

    def estimate(self, model: Model, resolution: str, duration_s: int | None = None) -> float:
        override = self._override(model, resolution)
        if isinstance(model, ImageModel):
            return override if override is not None else model.cost.get(resolution, 0.0)
        per_second = override if override is not None else model.cost_per_second.get(resolution, 0.0)
        return per_second * float(duration_s or 0)


def credits_per_image(credits: float, images: int | None) -> float | None:
    """Estimated credits per image: the cost of the requests over the images they make (the table's costs are per
    request, whatever gen_count asks); None for video (no images) or where the table knows no cost."""
    if not images or credits <= 0:
        return None
    return credits / images

# --------------------------------------------------------------------------------------------------------------
# Reference images the service accepts (conservative: what the web app's uploader offers)
# --------------------------------------------------------------------------------------------------------------

REFERENCE_IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
REFERENCE_IMAGE_MAX_BYTES = 20 * 1024 * 1024
REFERENCE_IMAGE_MIN_SIDE = 64
REFERENCE_IMAGE_MAX_SIDE = 8192
MAX_REFERENCES = 4
# A reference written as a string is an image_uri already on the service when it starts with one of these.
IMAGE_URI_PREFIXES: tuple[str, ...] = ("tos-",)
EXPLICIT_URI_PREFIX = "uri:"
