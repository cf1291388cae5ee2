"""How a record looks in answers: the submit's ``aigc_data`` and a ``get_history_by_ids`` entry.

The shapes follow the protocol reference (2.2, 2.3): ``status`` and ``task.status`` move together; ``item_list`` is
filled only at status 50, with ``image.large_images[0].image_url`` for images and
``video.transcoded_video.origin.video_url`` for videos (the Asia international sites, answered in the live profile
to hk/jp/sg requests, carry it only under ``common_attr.transcoded_video``); progress is in ``total_image_count`` /
``finished_image_count``, ``queue_info`` and ``forecast_cost_time``. A video's URL is its preview; the download
version, at a higher bitrate, is what ``get_local_item_list`` answers (:func:`local_items`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from jimeng_batch.protocol import catalog
from jimeng_batch.sim.assets import HIGH_KBPS, PREVIEW_KBPS
from jimeng_batch.sim.state import DONE, FAILED, HIGH_BITRATE_VARIANT, QUEUED, Record

__all__ = ["history_entry", "local_items", "submit_data"]

AssetUrl = Callable[[str], str]  # asset file name -> signed URL
_IMAGE_URI_PREFIX = f"tos-cn-i-{catalog.REGIONS['cn'].imagex_service_id}"


def _task(record: Record, status: int) -> dict[str, Any]:
    finished = status in (DONE, FAILED)
    return {
        "task_id": record.task_id,
        "submit_id": record.submit_id,
        "history_id": record.history_record_id,
        "status": status,
        "finish_time": int(record.finishes_at) if finished else 0,
        "create_time": int(record.submitted_at),
    }


def submit_data(record: Record, now: float) -> dict[str, Any]:
    """The ``data`` of a successful submit: the document's three ids, plus the live service's extra fields."""
    status = record.status(now)
    return {
        "aigc_data": {
            "history_record_id": record.history_record_id,
            "task_id": record.task_id,
            "submit_id": record.submit_id,
            "generate_type": record.spec.record_generate_type,
            "created_time": record.submitted_at,
            "item_list": [],
            "task": _task(record, status),
        },
        "extend": {"root_model": record.spec.root_model, "template_id": record.spec.template_id},
    }


def _image_item(record: Record, index: int, asset_url: AssetUrl) -> dict[str, Any]:
    spec = record.spec
    url = asset_url(record.asset_name(index))
    uri = f"{_IMAGE_URI_PREFIX}/{record.history_record_id}-{index}"
    large = {"image_url": url, "image_uri": uri, "width": spec.width, "height": spec.height, "format": "png"}
    return {
        "common_attr": {"id": record.item_id(index), "item_id": record.item_id(index), "cover_url": url},
        "image": {"format": "png", "width": spec.width, "height": spec.height, "large_images": [large]},
    }


def _video_item(record: Record, asset_url: AssetUrl, *, international: bool = False,
                variant: str = "") -> dict[str, Any]:
    """A video's item: its URL under ``video.transcoded_video`` (China) or only under
    ``common_attr.transcoded_video`` (``international``); the preview, or with ``variant`` the download version."""
    spec = record.spec
    url = asset_url(record.asset_name(0, variant))
    bitrate = HIGH_KBPS if variant else PREVIEW_KBPS
    transcoded = {"origin": {"video_url": url, "width": spec.width, "height": spec.height, "format": "mp4",
                             "definition": spec.resolution, "bitrate": bitrate * 1000}}
    common: dict[str, Any] = {"id": record.item_id(0), "item_id": record.item_id(0)}
    video: dict[str, Any] = {
        "video_id": f"v{record.item_id(0)}",
        "duration": spec.duration_s,
        "fps": catalog.DEFAULT_FPS,
        "width": spec.width,
        "height": spec.height,
    }
    if international:
        common["transcoded_video"] = transcoded
    else:
        video["transcoded_video"] = transcoded
    return {"common_attr": common, "video": video}


def local_items(records: list[Record], asset_url: AssetUrl, *, international: bool = False,
                with_url: bool = True) -> dict[str, Any]:
    """The ``data`` of ``get_local_item_list`` for finished video records: each item with its download version's
    URL (``with_url`` False: the items without any URL, as a service that names none)."""
    listed = []
    for record in records:
        item = _video_item(record, asset_url, international=international, variant=HIGH_BITRATE_VARIANT)
        if not with_url:
            item["common_attr"].pop("transcoded_video", None)
            item["video"].pop("transcoded_video", None)
        listed.append(item)
    return {"item_list": listed}


def history_entry(record: Record, now: float, asset_url: AssetUrl, *, international: bool = False
                  ) -> dict[str, Any]:
    """One record as ``get_history_by_ids`` returns it at time ``now`` (``international``: as the Asia
    international sites shape a video's item)."""
    status = record.status(now)
    elapsed = now - record.submitted_at
    queue_left = max(0.0, record.queue_s - elapsed)
    if status == DONE:
        items = (
            [_video_item(record, asset_url, international=international)]
            if record.spec.kind == "video"
            else [_image_item(record, i, asset_url) for i in range(record.image_count)]
        )
    else:
        items = []
    return {
        "history_record_id": record.history_record_id,
        "submit_id": record.submit_id,
        "generate_type": record.spec.record_generate_type,
        "created_time": record.submitted_at,
        "status": status,
        "fail_code": record.fail_code if status == FAILED else "",
        "fail_msg": "content filtered" if status == FAILED else "",
        "fail_starling_key": "",
        "fail_starling_message": "",
        "model_info": {"model_req_key": record.spec.model.key},
        "task": _task(record, status),
        "total_image_count": record.image_count,
        "finished_image_count": record.image_count if status == DONE else 0,
        "queue_info": {
            "queue_idx": math.ceil(queue_left),
            "queue_length": math.ceil(record.queue_s),
            "queue_status": 1 if status == QUEUED else (0 if status in (DONE, FAILED) else 2),
        },
        "forecast_cost_time": {
            "forecast_queue_cost": math.ceil(queue_left),
            "forecast_generate_cost": math.ceil(record.generation_s),
        },
        "item_list": items,
    }
