"""The dataset class verl loads: the curriculum's sample order served to verl's sequential sampler.

verl samples a dataset itself; to train stages in a fixed order it must be handed that order as the dataset.
Select it with::

    data.custom_cls.path=pkg://recipe.dataset  data.custom_cls.name=StagedRLHFDataset  data.shuffle=False

verl builds the train AND the validation dataset from the same ``data`` config (``create_rl_dataset`` does not
pass ``is_train`` on), so the mode is chosen from the files it is given:

- training (``data_files == data.train_files`` and ``data.stages`` set): rows come from the stage files (the same
  set as ``data.train_files``) and item i is sample i of ``build_plan(data.stages,
  batch_size=data.train_batch_size, seed=data.seed or 0)``, so with ``SequentialSampler`` and ``drop_last`` every
  dataloader batch is one plan step;
- anything else (``data.val_files``, or no ``data.stages``): a plain ``RLHFDataset`` over ``data_files``.

Every sample's ``extra_info`` gains ``plan_stage`` (-1 in plain mode), ``plan_stage_name`` ("validation" in plain
mode) and ``plan_index``, the same keys in both modes. ``data.filter_overlong_prompts`` is ignored: a filter would
shift the plan by dropping rows silently (the pre-flight checks prompt lengths). Images are stored paths made
absolute per worker and fitted with PIL only (``_build_messages``, ``fetch_image``); resuming is exact and refuses
another plan (``load_state_dict``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from PIL import Image
from verl.utils.dataset.rl_dataset import RLHFDataset

from data_prep.image_files import resolve_image_entry
from data_prep.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    MERGE_SIZE,
    ImageError,
    load_image,
    smart_resize_dims,
)
from recipe.plan_record import check_plan_state
from recipe.stages import StagePlan, StagePlanError, plan_from_data_config

logger = logging.getLogger(__name__)

PLAN_EXTRA_KEYS = ("plan_stage", "plan_stage_name", "plan_index")
VALIDATION_STAGE_NAME = "validation"


class StagedRLHFDataset(RLHFDataset):
    """verl's RLHFDataset serving the curriculum plan (training) or its own rows (validation); see module doc."""

    def __init__(
        self,
        data_files: str | list[str],
        tokenizer: Any,
        config: Any,
        processor: Any = None,
        max_samples: int = -1,
    ):
        self.plan: StagePlan | None = None
        if not _is_training_files(data_files, config):
            super().__init__(data_files, tokenizer, config, processor, max_samples)
            self.image_dirs = _image_dirs(self.original_data_files, self.data_files)
            return
        plan = plan_from_data_config(config)
        if config.get("shuffle", False):
            raise StagePlanError(
                "data.shuffle=True would shuffle the stage plan across stages; set data.shuffle=False "
                "(each stage shuffles itself with its 'shuffle' key)"
            )
        if max_samples is not None and max_samples > 0:
            raise StagePlanError("data.train_max_samples does not apply to data.stages; give a stage 'steps' instead")
        stage_files = {_norm(f.path) for f in plan.files}
        train_files = {_norm(f) for f in _as_list(data_files)}
        if stage_files != train_files:
            raise StagePlanError(
                "data.train_files must list the stage files (in any order): missing "
                f"{sorted(stage_files - train_files)}, not in any stage {sorted(train_files - stage_files)}"
            )
        gen_batch_size = config.get("gen_batch_size")
        if gen_batch_size not in (None, 1, plan.batch_size):
            logger.warning(
                "data.gen_batch_size=%s differs from data.train_batch_size=%s: dataloader batches will not coincide "
                "with stage plan steps",
                gen_batch_size,
                plan.batch_size,
            )
        self.plan = plan
        local_files = [os.path.expanduser(f.path) for f in plan.files]  # the order indexes them concatenated
        super().__init__(local_files, tokenizer, config, processor, max_samples=-1)
        self.image_dirs = _image_dirs(self.original_data_files, self.data_files)
        if len(self.dataframe) != plan.num_rows:
            raise StagePlanError(
                f"the stage files hold {len(self.dataframe)} rows but the plan counted {plan.num_rows}: "
                "a file changed while loading"
            )
        print(f"StagedRLHFDataset serves {plan.describe()}", flush=True)  # verl reports its datasets with print

    def maybe_filter_out_long_prompts(self, dataframe: Any = None) -> Any:
        """Keep every row; note once when the config asked for filtering.

        A length filter would drop rows silently and shift the plan (and stock verl drops every image row when
        qwen_vl_utils or torchvision is missing); the pre-flight checks prompt lengths and the agent loop rejects
        an over-long multimodal prompt loudly.
        """
        if self.filter_overlong_prompts:
            logger.warning(
                "StagedRLHFDataset ignores data.filter_overlong_prompts: rows are never dropped silently; "
                "the pre-flight checks prompt lengths"
            )
        return dataframe

    def _build_messages(self, example: dict, key: str) -> list:
        """verl's messages, after each stored image path is made absolute.

        A written row names its pre-resized map by a path relative to its data folder (``images/<sha256>.png``,
        ``data_prep.image_files``); it is resolved against the folders of the dataset's Parquet files in the
        process that read them, so the content item the agent loop gets (``{"type": "image", "image": "/abs/...",
        "min_pixels", "max_pixels"}``) resolves in any worker, whatever its working directory (the folder must be
        reachable there: shared storage, or the same node-local path on every node). Rows that embed ``bytes``
        still load; verl's stock ``RLHFDataset`` cannot read path rows (it opens ``bytes`` unconditionally).
        """
        images = example.get(self.image_key)
        if images:
            where = f"row {(example.get('extra_info') or {}).get('source_id', '?')}"
            example[self.image_key] = [
                self._content_image(entry, where=f"{where}: images[{i}]") for i, entry in enumerate(images)
            ]
        return super()._build_messages(example, key)

    def _content_image(self, entry: Any, *, where: str) -> Any:
        """A stored-path image entry as verl's ``{"image": absolute path, min/max_pixels}``; others unchanged."""
        resolved = resolve_image_entry(entry, self.image_dirs, where=where)
        if resolved is entry:
            return entry
        return {"image": resolved["path"], **{k: v for k, v in resolved.items() if k not in ("bytes", "path")}}

    def __len__(self) -> int:
        if self.plan is None:
            return super().__len__()
        return self.plan.num_samples

    def __getitem__(self, item: int) -> dict:
        if self.plan is None:
            row = super().__getitem__(item)
            stage, name = -1, VALIDATION_STAGE_NAME
        else:
            row = super().__getitem__(int(self.plan.order[item]))
            stage, name = self.plan.stage_of_sample(item)
        extra = dict(row.get("extra_info") or {})
        extra.update(plan_stage=int(stage), plan_stage_name=name, plan_index=int(item))
        row["extra_info"] = extra
        return row

    # torchdata Stateful protocol: StatefulDataLoader saves this with verl's data.pt and restores it on resume.
    def state_dict(self) -> dict[str, Any]:
        """The plan record (fingerprint and stage table), or None for a plain dataset."""
        return {"stage_plan": self.plan.record() if self.plan is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Refuse a state written under another stage plan (StagePlanMismatchError lists the differences).

        The order is a pure function of the config, so verl's dataloader state (samples yielded so far) restores
        the exact position, across stage boundaries too; this check makes a changed plan fail instead of silently
        skipping or repeating samples. With ``num_workers=0`` it runs when the restored dataloader is iterated;
        with workers each worker runs it and the dataloader re-raises it in the trainer.
        """
        check_plan_state((state_dict or {}).get("stage_plan"), self.plan)

    # --- images without qwen_vl_utils ---------------------------------------------------------------------------

    @classmethod
    def _process_multi_modal_info(cls, messages: list[dict], image_patch_size: int, config: Any) -> tuple:
        """(images, videos, audios) for the agent loop, images through ``fetch_image`` (PIL only), so neither
        qwen_vl_utils nor torchvision is needed; videos, unused by this recipe, still go through qwen_vl_utils."""
        items = [
            item
            for message in messages
            if isinstance(message.get("content"), list)
            for item in message["content"]
            if isinstance(item, dict)
        ]
        if any(item.get("type") == "video" or "video" in item for item in items):
            return super()._process_multi_modal_info(messages, image_patch_size, config)
        images = [
            fetch_image(item, image_patch_size)
            for item in items
            if item.get("type") in ("image", "image_url") or "image" in item or "image_url" in item
        ]
        return (images or None), None, cls._extract_audio_info(messages)

    @classmethod
    async def process_vision_info(cls, messages: list[dict], image_patch_size: int, config: Any) -> tuple:
        """(images, videos) like RLHFDataset.process_vision_info, without qwen_vl_utils for images."""
        loop = asyncio.get_running_loop()
        images, videos, _ = await loop.run_in_executor(
            None, lambda: cls._process_multi_modal_info(messages, image_patch_size=image_patch_size, config=config)
        )
        return images, videos


def fetch_image(item: dict[str, Any], image_patch_size: int = 14) -> Image.Image:
    """One image content item as a fitted RGB image, as qwen_vl_utils' ``fetch_image`` does, without it.

    Args:
        item: a content item holding a PIL image, PNG bytes, base64 or a path (under ``image``, ``image_url``,
            ``bytes`` or ``path``; unwrapped by ``data_prep.images.load_image``), optionally ``min_pixels`` /
            ``max_pixels`` or ``resized_height`` / ``resized_width``.
        image_patch_size: the vision patch; sides become multiples of it x 2 (the merge size).

    Returns:
        The image in RGB, resized (bicubic) inside the pixel budget; a pre-resized map passes unchanged.

    >>> fetch_image({"image": Image.new("L", (1000, 600)), "max_pixels": 200 * 200}).size
    (252, 140)
    """
    source = next((item[k] for k in ("image", "image_url", "bytes", "path") if item.get(k) is not None), None)
    if source is None:
        raise ImageError(f"image content item without 'image', 'image_url', 'bytes' or 'path' (keys {sorted(item)})")
    image = load_image(source, where="image content item")  # one unwrapping for every form: data_prep.images
    image = image.convert("RGB") if image.mode != "RGB" else image  # prepared maps are RGB: no copy
    factor = image_patch_size * MERGE_SIZE
    if "resized_height" in item and "resized_width" in item:
        width, height = smart_resize_dims(
            int(item["resized_width"]),
            int(item["resized_height"]),
            min_pixels=DEFAULT_MIN_PIXELS,
            max_pixels=DEFAULT_MAX_PIXELS,
            factor=factor,
        )
    else:
        width, height = smart_resize_dims(
            image.width,
            image.height,
            min_pixels=int(item.get("min_pixels") or DEFAULT_MIN_PIXELS),
            max_pixels=int(item.get("max_pixels") or DEFAULT_MAX_PIXELS),
            factor=factor,
        )
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return image


def _image_dirs(*file_lists: Any) -> list[str]:
    """Absolute folders of the dataset's Parquet files (as configured, then verl's local copies), deduplicated."""
    dirs: list[str] = []
    for files in file_lists:
        for f in _as_list(files):
            folder = os.path.dirname(os.path.abspath(os.path.expanduser(f)))
            if folder not in dirs:
                dirs.append(folder)
    return dirs


def _as_list(files: Any) -> list[str]:
    if files is None:
        return []
    if isinstance(files, str | os.PathLike):
        return [os.fspath(files)]
    return [os.fspath(f) for f in files]


def _norm(path: str) -> str:
    return os.path.normpath(os.path.expanduser(os.fspath(path)))


def _is_training_files(data_files: Any, config: Any) -> bool:
    """True when verl is building the training dataset of a staged config (see module doc)."""
    if not config.get("stages"):
        return False
    given = [_norm(f) for f in _as_list(data_files)]
    train = [_norm(f) for f in _as_list(config.get("train_files"))]
    val = [_norm(f) for f in _as_list(config.get("val_files"))]
    if train and train == val:
        raise StagePlanError(
            "data.train_files and data.val_files are the same files, so StagedRLHFDataset cannot tell the training "
            "dataset (served by data.stages) from the validation one; give validation its own files"
        )
    return given == train
