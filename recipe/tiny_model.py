"""A tiny random Qwen2.5-VL checkpoint built offline in seconds: for CPU tests and the pre-flight's ``--tiny-model``.

``build_tiny_qwen(directory)`` writes a directory that ``AutoTokenizer``, ``AutoProcessor``, verl's
``hf_tokenizer`` / ``hf_processor`` and ``Qwen2_5_VLForConditionalGeneration.from_pretrained`` load from a local
path, with no network:

- a byte-level BPE (trained here with ``tokenizers`` on a small built-in corpus, Qwen's pre-tokenizer regex) plus
  Qwen2.5-VL's special tokens (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``, ``<|image_pad|>``, ...),
  loaded as ``Qwen2Tokenizer``;
- a Qwen-style chat template that renders an image content item as
  ``<|vision_start|><|image_pad|><|vision_end|>`` (the processor then expands ``<|image_pad|>`` per patch group);
- ``Qwen2VLImageProcessorPil`` (no torchvision needed);
- ``TinyVideoProcessor``, a stand-in video processor: ``Qwen2_5_VLProcessor`` requires one and the real
  ``Qwen2VLVideoProcessor`` needs torchvision. It cannot process videos (this recipe has none);
- a random ``Qwen2_5_VLConfig`` model (hidden size 32, two text and two vision layers, about 0.1 M parameters).

Loading the processor needs ``TinyVideoProcessor`` to be found by name: importing this module registers it with
``AutoVideoProcessor`` (in this process). In a process that has not imported it (a Ray worker), load with
``trust_remote_code=True`` instead: the directory carries a two-line module that imports it from here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import transformers
from transformers import PretrainedConfig
from transformers.video_processing_utils import BaseVideoProcessor

from data_prep.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, MERGE_SIZE, PATCH_SIZE

# Qwen2.5-VL's added tokens, in its order; the first 14 are special (never split, skipped when decoding).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
PLAIN_ADDED_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

# Same shape as Qwen2-VL's template: a default system turn, list content with image/video/text items. No
# whitespace control ({%- -%}): it would also strip the template's own newlines.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item or 'image_url' in item %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' or 'video' in item %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in item %}"
    "{{ item['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

# Qwen2's pre-tokenizer split (letters, single digits, punctuation runs, newlines, spaces).
_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

_CORPUS_LINES = (
    "You are a helpful assistant.",
    "system user assistant",
    "Please solve the multiple-choice question about the metro map.",
    "Are the two stations on the same line? Answer yes or no and put the answer in \\boxed{}.",
    "How many lines pass through this station? How many lines are on the map? How many stops lie between them?",
    "Route Name: Line 1\nDeparture Stop: Central Station\nArrival Stop: Airport\n--\n",
    "Number of Via Stops: 3\nVia Stops: North Gate, Museum, Harbour",
    "The answer is \\boxed{A}. The answer is \\boxed{B}. \\boxed{C} \\boxed{D} \\boxed{yes} \\boxed{no}",
    "Metro Line Station Road Street Square Park Bridge University Technology Hospital Market Tower East West",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 20 42 100",
    "from to via transfer change take ride get off then and the a of on in at is are",
    "<image>\nWhich route takes you from one station to the other?",
)


# ProcessorMixin checks ``isinstance(video_processor, transformers.BaseVideoProcessor)``; without torchvision that
# name is a dummy class (metaclass DummyObject) rather than the real base. The stand-in derives from both, with a
# metaclass that lets its own attributes be read normally.
_CHECKED_BASE: Any = transformers.BaseVideoProcessor
if _CHECKED_BASE is BaseVideoProcessor:
    _BASES: tuple[type, ...] = (BaseVideoProcessor,)
    _META: type = type
else:

    class _StandInMeta(type(_CHECKED_BASE)):  # type: ignore[misc]
        """DummyObject blocks class attribute access; the stand-in's attributes are real."""

        def __getattribute__(cls, key: str) -> Any:
            return type.__getattribute__(cls, key)

    _BASES = (BaseVideoProcessor, _CHECKED_BASE)
    _META = _StandInMeta


class TinyVideoProcessor(*_BASES, metaclass=_META):  # type: ignore[misc]
    """Stand-in video processor: satisfies ``Qwen2_5_VLProcessor`` without torchvision; processes no video."""

    model_input_names = ["pixel_values_videos", "video_grid_thw"]
    # Read by Qwen2_5_VLProcessor when counting video tokens; the values of Qwen2VLVideoProcessor.
    merge_size = 2
    patch_size = 14
    temporal_patch_size = 2

    def __call__(self, videos: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError("TinyVideoProcessor is a test stand-in and cannot process videos")

    def preprocess(self, videos: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError("TinyVideoProcessor is a test stand-in and cannot process videos")


class _TinyVideoStandInConfig(PretrainedConfig):
    """Registry key only: ``AutoVideoProcessor`` finds registered classes by name through a config class."""

    model_type = "rewardmap_tiny_video_stand_in"


def register_tiny_video_processor() -> None:
    """Make ``video_processor_type: TinyVideoProcessor`` resolvable by ``AutoVideoProcessor`` (idempotent)."""
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor

    AutoVideoProcessor.register(_TinyVideoStandInConfig, TinyVideoProcessor, exist_ok=True)


register_tiny_video_processor()


def _train_tokenizer(vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with Qwen's pre-tokenizer on the built-in corpus; returns (vocab, merges)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
    )
    tokenizer.train_from_iterator(list(_CORPUS_LINES) * 4, trainer=trainer)
    data = json.loads(tokenizer.to_str())
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in data["model"]["merges"]]
    return dict(data["model"]["vocab"]), merges


_REMOTE_MODULE = "tiny_video_processor"


def _add_remote_code_route(out: Path) -> None:
    """Let ``trust_remote_code=True`` find the stand-in in processes that never imported this module."""
    (out / f"{_REMOTE_MODULE}.py").write_text(
        '"""Stand-in video processor of the tiny test model (see recipe.tiny_model)."""\n\n'
        "from recipe.tiny_model import TinyVideoProcessor\n\n"
        '__all__ = ["TinyVideoProcessor"]\n'
    )
    config_path = out / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["video_processor"]["auto_map"] = {"AutoVideoProcessor": f"{_REMOTE_MODULE}.TinyVideoProcessor"}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _mrope_section(head_dim: int) -> list[int]:
    """Split the rotary half-dimension over (time, height, width) as Qwen2.5-VL does (1/4 time, rest halved)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_tiny_qwen(
    directory: str | Path,
    *,
    hidden_size: int = 32,
    vocab_size: int = 512,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    seed: int = 0,
) -> Path:
    """Write a tiny random Qwen2.5-VL checkpoint (tokenizer, processor, model) into ``directory``; return it.

    ``min_pixels``/``max_pixels`` are the image processor's own bounds, by default the recipe's pixel budget
    (``data_prep.images``), so the processor measures prepared maps at the size the real model sees them; an
    image outside them is resized again by the processor.
    """
    import torch
    from transformers import (
        AddedToken,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
        Qwen2VLImageProcessorPil,
    )

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)

    vocab, merges = _train_tokenizer(vocab_size)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in PLAIN_ADDED_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE

    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        patch_size=PATCH_SIZE,
        temporal_patch_size=2,
        merge_size=MERGE_SIZE,
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=TinyVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    _add_remote_code_route(out)

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = hidden_size // 2
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 32768,
            "max_window_layers": 2,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": _mrope_section(head_dim),
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2,
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's random state
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    return out


# -- warm start ------------------------------------------------------------------------------------------------------
WARM_START_STAMP = "rewardmap_warm_start.json"
WARM_START_VERSION = 1


def warm_start_tiny_qwen(
    model_dir: str | Path, rows: list[dict[str, Any]], *, steps: int, learning_rate: float, seed: int = 0
) -> list[float]:
    """Train the model in ``model_dir`` in place on the rows' gold answers (next-token loss on the answer only).

    A random tiny model barely depends on token positions and never answers right; a few seconds of this make
    it position-sensitive and right on some samples, so sampling at temperature 1 gives groups with different
    rewards (a learning signal for GRPO). Prompts are the rows' chat prompts with their images as the agent loop
    sees them (``recipe.row_images``), and M-RoPE positions are transformers' own (``mm_token_type_ids`` given).
    Returns the loss before each step.
    """
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from recipe.row_images import chat_messages, row_images
    from reward_fns.gold import gold_response
    from reward_fns.ground_truth import GroundTruth

    processor = AutoProcessor.from_pretrained(model_dir)
    tokenizer = processor.tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    image_token = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    sequences, answer_lengths, pixel_values, grids = [], [], [], []
    for row in rows:
        text = processor.apply_chat_template(chat_messages(row), add_generation_prompt=True, tokenize=False)
        encoded = processor(text=[text], images=row_images(row) or None, return_tensors="pt")
        gold = gold_response(GroundTruth.from_json(row["reward_model"]["ground_truth"]))
        answer = tokenizer.encode(gold, add_special_tokens=False) + [end]
        sequences.append(encoded["input_ids"][0].tolist() + answer)
        answer_lengths.append(len(answer))
        if "pixel_values" in encoded:
            pixel_values.append(encoded["pixel_values"])
            grids.append(encoded["image_grid_thw"])
    width = max(len(s) for s in sequences)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences])
    attention_mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    labels = torch.full_like(input_ids, -100)
    for i, (s, n) in enumerate(zip(sequences, answer_lengths, strict=True)):
        labels[i, len(s) - n : len(s)] = input_ids[i, len(s) - n : len(s)]
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if pixel_values:
        inputs.update(
            pixel_values=torch.cat(pixel_values),
            image_grid_thw=torch.cat(grids),
            mm_token_type_ids=(input_ids == image_token).long(),
        )

    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, attn_implementation="sdpa")
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
        for _ in range(steps):
            loss = model(**inputs).loss
            model.model.rope_deltas = None  # recomputed from the batch on every full forward
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    model.save_pretrained(model_dir)
    return losses


def rows_digest(rows: list[dict[str, Any]]) -> str:
    """sha256 of what a warm start learns from: each row's prompt and ground truth, and its images (embedded bytes,
    or a stored image named by its content, ``images/<sha256>.png``, wherever the data folder is)."""
    import hashlib
    import os

    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row["prompt"], row["reward_model"]], sort_keys=True, default=str).encode())
        for image in row.get("images") or []:
            if isinstance(image, dict):
                stored = os.path.basename(str(image.get("path") or ""))
                digest.update(bytes(image.get("bytes") or b"") or stored.encode())
    return digest.hexdigest()


def prepare_warm_tiny_qwen(
    directory: str | Path,
    rows: list[dict[str, Any]],
    *,
    hidden_size: int,
    steps: int,
    learning_rate: float,
    seed: int = 0,
) -> tuple[Path, bool]:
    """The tiny model warm-started on ``rows`` in ``directory``, built unless already there; (path, built now).

    The folder carries a stamp of what it was built from (sizes, steps, seed and a digest of the rows); another
    stamp rebuilds it. Built in a staging folder put in place by ``data_prep.atomic_dir``: a killed build leaves
    the previous model or the new one.
    """
    from data_prep import atomic_dir

    out = Path(directory)
    stamp = {
        "version": WARM_START_VERSION,
        "hidden_size": hidden_size,
        "steps": steps,
        "learning_rate": learning_rate,
        "seed": seed,
        "rows": len(rows),
        "rows_sha256": rows_digest(rows),
    }
    stamp_path = out / WARM_START_STAMP
    if stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text()).get("stamp") == stamp:
                return out, False
        except ValueError:
            pass
    with atomic_dir.replacing(out, is_complete=lambda folder: (folder / WARM_START_STAMP).is_file()) as tmp:
        build_tiny_qwen(tmp, hidden_size=hidden_size, seed=seed)
        losses = warm_start_tiny_qwen(tmp, rows, steps=steps, learning_rate=learning_rate, seed=seed)
        record = {
            "stamp": stamp,
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
        }
        (tmp / WARM_START_STAMP).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out, True
