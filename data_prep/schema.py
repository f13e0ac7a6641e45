"""The verl Parquet row every part of the recipe shares: built here, validated here, documented here.

A row (one question, one map image)::

    data_source   "reasonmap" | "reasonmap_plus" | "reasonmap_train" | "synthetic"
    prompt        [{"role": "user", "content": "<image>\\n" + question}]   (one <image> per image)
    images        [{"bytes": PNG bytes | None, "path": str | None, "min_pixels": int, "max_pixels": int}]
                  (pre-resized to the budget; see "Images" below)
    ability       "perception" (TorF*, Counting*) | "planning"
    reward_model  {"style": "rule", "ground_truth": GroundTruth.to_json()}   (see reward_fns.ground_truth)
    extra_info    flat dict, the same keys in every row (EXTRA_INFO_KEYS), for metrics, stages and filtering

``ground_truth`` carries everything scoring needs (the metro network included), so reward workers never open a
file; ``extra_info`` repeats the scalar facts so verl's batch and the metrics can group without parsing JSON.

Images. A row built in memory (``build_row``) carries its PNG ``bytes``. A row written to disk
(``data_prep.writer``) carries ``path`` instead: ``images/<sha256 of the PNG>.png``, relative to the folder
holding the Parquet file, so each map is stored once however many questions use it, and the folder can be
copied anywhere. The name is the content's hash, so a row still says exactly which image it means. Readers
resolve it with ``data_prep.image_files`` (``open_row_image``, ``resolve_row_images``); folders written before
this layout (``bytes`` in every row) still read.
"""

from __future__ import annotations

import re
from typing import Any

from reward_fns.ground_truth import GroundTruth

DATA_SOURCES = ("reasonmap", "reasonmap_plus", "reasonmap_train", "synthetic")

# Curriculum stage of each question type, as in the released code: TorF -> Counting2/3 -> Counting1 -> planning.
STAGE_OF_TYPE = {
    "TorF1": "torf",
    "TorF2": "torf",
    "Counting2": "counting",
    "Counting3": "counting",
    "Counting1": "counting_stops",
    "planning": "planning",
}
STAGES = ("torf", "counting", "counting_stops", "planning")

# extra_info keys and their Python types; every row has all of them (verl takes the key list from row 0).
EXTRA_INFO_KEYS: dict[str, type] = {
    "index": int,
    "split": str,
    "question_type": str,
    "template": str,
    "stage": str,
    "city": str,
    "country": str,
    "map_difficulty": str,
    "question_transfer_count": int,
    "station_1": str,
    "station_2": str,
    "source_id": str,
    "min_pixels": int,
    "max_pixels": int,
}


IMAGES_DIR = "images"  # the folder, beside the Parquet files, that holds each prepared map once
_STORED_IMAGE_PATH = re.compile(rf"^{IMAGES_DIR}/[0-9a-f]{{64}}\.png$")


def stored_image_path(sha256_hex: str) -> str:
    """The relative path a written row uses for the PNG whose sha256 is ``sha256_hex``."""
    path = f"{IMAGES_DIR}/{sha256_hex}.png"
    if not _STORED_IMAGE_PATH.match(path):
        raise ValueError(f"not a sha256 hex digest: {sha256_hex!r}")
    return path


def is_stored_image_path(path: Any) -> bool:
    """True for ``images/<64 hex digits>.png`` (relative, no other form: rows never point outside their folder)."""
    return isinstance(path, str) and bool(_STORED_IMAGE_PATH.match(path))


class RowError(ValueError):
    """A row or record that cannot be used; the message names the record and the field."""


def build_row(
    *,
    data_source: str,
    question: str,
    image_png: bytes,
    ground_truth: GroundTruth,
    split: str,
    index: int,
    source_id: str,
    min_pixels: int,
    max_pixels: int,
) -> dict[str, Any]:
    """Assemble one schema row from a question, its pre-resized PNG map and its ground truth."""
    gt = ground_truth
    row = {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": "<image>\n" + question}],
        "images": [{"bytes": image_png, "path": None, "min_pixels": int(min_pixels), "max_pixels": int(max_pixels)}],
        "ability": "planning" if gt.question_type == "planning" else "perception",
        "reward_model": {"style": "rule", "ground_truth": gt.to_json()},
        "extra_info": {
            "index": int(index),
            "split": split,
            "question_type": gt.question_type,
            "template": gt.template if gt.question_type == "planning" else "vqa",
            "stage": STAGE_OF_TYPE[gt.question_type],
            "city": gt.city,
            "country": gt.country,
            "map_difficulty": gt.map_difficulty,
            "question_transfer_count": int(gt.question_transfer_count),
            "station_1": gt.station_1,
            "station_2": gt.station_2,
            "source_id": source_id,
            "min_pixels": int(min_pixels),
            "max_pixels": int(max_pixels),
        },
    }
    validate_row(row, where=f"{data_source} {split} row {index}")
    return row


def validate_row(row: dict[str, Any], *, where: str = "row") -> GroundTruth:
    """Check a row against the schema; raise RowError naming ``where`` and the field. Returns its ground truth."""

    def fail(field: str, why: str) -> RowError:
        return RowError(f"{where}: field {field!r}: {why}")

    for key in ("data_source", "prompt", "images", "ability", "reward_model", "extra_info"):
        if key not in row:
            raise fail(key, "missing")
    if row["data_source"] not in DATA_SOURCES:
        raise fail("data_source", f"{row['data_source']!r} is not one of {DATA_SOURCES}")
    prompt = list(row["prompt"])
    if not prompt or not all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        raise fail("prompt", "must be a non-empty chat list of {role, content}")
    images = list(row["images"])
    n_tags = sum(str(m["content"]).count("<image>") for m in prompt)
    if n_tags != len(images):
        raise fail("prompt", f"has {n_tags} <image> tags for {len(images)} images")
    for i, image in enumerate(images):
        if not isinstance(image, dict):
            raise fail(
                f"images[{i}]", f"must be a dict with PNG 'bytes' or a stored 'path', got {type(image).__name__}"
            )
        data, path = image.get("bytes"), image.get("path")
        if data and path:
            raise fail(f"images[{i}]", "has both 'bytes' and 'path'; a row stores its image one way")
        if path is not None and not is_stored_image_path(path):
            raise fail(f"images[{i}].path", f"{path!r} is not {IMAGES_DIR}/<sha256>.png (relative to the data folder)")
        if not data and not path:
            raise fail(f"images[{i}]", "has neither PNG 'bytes' nor a stored 'path'")
    reward_model = row["reward_model"]
    if not isinstance(reward_model, dict) or reward_model.get("style") != "rule":
        raise fail("reward_model.style", "must be 'rule'")
    try:
        gt = GroundTruth.from_json(reward_model.get("ground_truth"))
    except (TypeError, ValueError) as err:
        raise fail("reward_model.ground_truth", str(err)) from err
    extra = row["extra_info"]
    for key, typ in EXTRA_INFO_KEYS.items():
        if key not in extra:
            raise fail(f"extra_info.{key}", "missing")
        if not isinstance(extra[key], typ) or isinstance(extra[key], bool):
            raise fail(f"extra_info.{key}", f"must be {typ.__name__}, got {type(extra[key]).__name__}")
    expected_ability = "planning" if gt.question_type == "planning" else "perception"
    if row["ability"] != expected_ability:
        raise fail("ability", f"must be {expected_ability!r} for {gt.question_type}")
    return gt
