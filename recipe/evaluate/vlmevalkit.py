"""``export-vlmevalkit``: the prepared ReasonMap-Plus test split in VLMEvalKit's ``ReasonMap_Plus`` TSV layout.

Columns (what ``vlmeval/dataset/reasonmap_plus.py`` reads): ``index`` (0..N-1), ``image_path`` (an absolute path
to the map PNG, written once per distinct map into ``<tsv stem>_images/``), ``question`` (the prompt text without
the ``<image>`` placeholder), ``answer`` (int: TorF 1/0, Counting1 the option index 0-3, Counting2/3 the count),
``type``, ``difficulty_city`` (easy / middle / hard), plus ``city``, ``country`` and ``source_id``, which
VLMEvalKit ignores. There is no ``image`` column by default: ``ReasonMap_Plus.build_prompt`` passes that cell as is,
and VLMEvalKit's Qwen2-VL wrapper rejects bare base64; ``--embed-images`` writes it as ``data:image;base64,...``
instead (self-contained, much larger). The images are the rows' own, read by the training dataset's
``recipe.dataset.fetch_image`` (the same pixels the recipe's models see).

VLMEvalKit checks the md5 of ``$LMUData/ReasonMap-Plus.tsv`` against its published file and downloads that one
again when they differ, so register this file under a name of its own before evaluating it there.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_prep.images import PATCH_SIZE
from recipe.dataset import fetch_image
from recipe.evaluate.files import EvalInputError, write_bytes_atomic, write_text_atomic
from recipe.evaluate.testset import ROW_COLUMNS, iter_rows
from reward_fns.ground_truth import GroundTruth

TSV_COLUMNS = ("index", "image_path", "question", "answer", "type", "difficulty_city", "city", "country", "source_id")


def _question_text(prompt: Sequence[dict[str, Any]]) -> str:
    text = "\n".join(str(m.get("content", "")) for m in prompt if m.get("role", "user") == "user")
    return text.replace("<image>", "").strip()


def _entry_key(entry: Any) -> str:
    return hashlib.sha256(repr(entry).encode("utf-8", errors="replace")).hexdigest()[:20]


def run_export(test_files: Sequence[str], out: str, *, embed_images: bool = False) -> dict[str, int]:
    """Write the TSV (and the images folder); returns counts. EvalInputError when no ReasonMap-Plus row exists."""
    target = Path(out)
    images_dir = target.with_name(f"{target.stem}_images")
    rows: list[dict[str, Any]] = []
    written: dict[str, str] = {}
    skipped = 0
    for file in test_files:
        for index, row in iter_rows(file, ROW_COLUMNS):
            gt = GroundTruth.from_json(row["reward_model"]["ground_truth"])
            if gt.question_type == "planning":
                skipped += 1
                continue
            entries = row.get("images") or []
            if len(entries) != 1:
                raise EvalInputError(f"{file} row {index}: {len(entries)} images; ReasonMap-Plus rows have one")
            key = _entry_key(entries[0])
            if key not in written:
                image = fetch_image({"type": "image", **entries[0]}, PATCH_SIZE)
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                data = buffer.getvalue()
                if embed_images:
                    written[key] = "data:image;base64," + base64.b64encode(data).decode("ascii")
                else:
                    path = write_bytes_atomic(images_dir / f"{key}.png", data)
                    written[key] = str(path.resolve())
            extra = row.get("extra_info") or {}
            rows.append(
                {
                    "index": len(rows),
                    "image" if embed_images else "image_path": written[key],
                    "question": _question_text(row["prompt"]),
                    "answer": int(gt.answer),
                    "type": gt.question_type,
                    "difficulty_city": gt.map_difficulty,
                    "city": gt.city,
                    "country": gt.country,
                    "source_id": str(extra.get("source_id", "")),
                }
            )
    if not rows:
        raise EvalInputError(f"{', '.join(map(str, test_files))}: no ReasonMap-Plus (TorF / Counting) rows to export")
    columns = [("image" if embed_images else "image_path") if c == "image_path" else c for c in TSV_COLUMNS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(target, buffer.getvalue())
    return {"rows": len(rows), "images": len(written), "planning_rows_skipped": skipped}
