"""A tiny random Qwen2.5-VL checkpoint built offline in seconds: for CPU tests and the pre-flight's ``--tiny-model``.

``build_tiny_qwen(directory)`` writes a directory that ``AutoTokenizer``, ``AutoProcessor``, verl's
``hf_tokenizer`` / ``hf_processor`` and ``Qwen2_5_VLForConditionalGeneration.from_pretrained`` load from a local
path, with no network:

- a byte-level BPE (trained here with ``tokenizers`` on a small built-in corpus, Qwen's pre-tokenizer regex) plus
  Qwen2.5-VL's special tokens (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``, ``<|image_pad|>``, ...),
  loaded as ``Qwen2Tokenizer``; given ``names`` (the stations and lines of the maps a run uses), every word of
  them becomes one token, so a model this small can copy a station name from the question into its answer;
- a Qwen-style chat template that renders an image content item as
  ``<|vision_start|><|image_pad|><|vision_end|>`` (the processor then expands ``<|image_pad|>`` per patch group);
- ``Qwen2VLImageProcessorPil`` (no torchvision needed);
- ``TinyVideoProcessor``, a stand-in video processor: ``Qwen2_5_VLProcessor`` requires one and the real
  ``Qwen2VLVideoProcessor`` needs torchvision. It cannot process videos (this recipe has none);
- a random ``Qwen2_5_VLConfig`` model (by default hidden size 32, two text and two vision layers, about 0.1 M
  parameters).

``prepare_warm_tiny_qwen`` builds one and trains it briefly on gold answers (``warm_start_tiny_qwen``) into a
folder named by everything that shapes it; ``recipe.cpu.warm_start`` decides which rows and names (held-out
synthetic cities, never a training question).

Loading the processor needs ``TinyVideoProcessor`` to be found by name: importing this module registers it with
``AutoVideoProcessor`` (in this process). In a process that has not imported it (a Ray worker), load with
``trust_remote_code=True`` instead: the directory carries a two-line module that imports it from here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


# The embeddings of name words start this large (std; Qwen's initializer gives 0.02): with tied embeddings a token's
# logit is the final hidden state (norm about sqrt(hidden_size)) times its embedding, so a word whose embedding keeps
# the initial norm (0.16 at width 64: a name the model never trained on, i.e. every name of a run's cities) can never
# outscore thousands of others by copying it; at 0.3 (norm 2.4) it can. Every name word gets it, run's and held-out.
NAME_EMBEDDING_STD = 0.3
WHOLE_WORDS_VOCAB = 1 << 20  # a cap BPE never reaches: it merges until every word of its corpus is one token


def name_words(names: Sequence[str]) -> list[str]:
    """The distinct words of ``names`` (split on whitespace, sorted): what ``build_tiny_qwen`` makes whole tokens.

    >>> name_words(["Kobo North Station", "Line 2", "Kobo Station"])
    ['2', 'Kobo', 'Line', 'North', 'Station']
    """
    return sorted({word for name in names for word in str(name).split()})


def word_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """The vocabulary ids of ``words`` as whole tokens, with and without the leading space (byte-level BPE's Ġ)."""
    ids = {tokenizer.convert_tokens_to_ids(token) for word in words for token in (word, "\u0120" + word)}
    return sorted(i for i in ids if i is not None and i != tokenizer.unk_token_id)


def _train_tokenizer(vocab_size: int, names: Sequence[str] = ()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with Qwen's pre-tokenizer on the built-in corpus (plus the words of ``names``, each
    after a space as a question writes it, until each is one token); returns (vocab, merges)."""
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
    words = name_words(names)
    corpus = list(_CORPUS_LINES) * 4 + ([" " + " ".join(words)] * 2 if words else [])
    trainer = trainers.BpeTrainer(
        vocab_size=WHOLE_WORDS_VOCAB if words else vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    data = json.loads(tokenizer.to_str())
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in data["model"]["merges"]]
    return dict(data["model"]["vocab"]), merges


_REMOTE_MODULE = "tiny_video_processor"


def _add_remote_code_route(out: Path) -> None:
    """Let ``trust_remote_code=True`` find the stand-in in processes that never imported this module."""
    (out / f"{_REMOTE_MODULE}.py").write_text(
        '"""Stand-in video processor of the tiny test model (see recipe.cpu.tiny_model)."""\n\n'
        "from recipe.cpu.tiny_model import TinyVideoProcessor\n\n"
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
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 512,
    names: Sequence[str] = (),
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    seed: int = 0,
) -> Path:
    """Write a tiny random Qwen2.5-VL checkpoint (tokenizer, processor, model) into ``directory``; return it.

    ``layers`` text layers of width ``hidden_size`` with ``heads`` attention heads (half as many key/value heads);
    the vision tower has two layers. ``vocab_size`` caps the BPE; with ``names`` the BPE instead merges until each
    of their words (and every word of the built-in corpus) is one token. ``min_pixels``/``max_pixels`` are the
    image processor's own bounds, by default the recipe's pixel budget (``data_prep.images``), so the processor
    measures prepared maps at the size the real model sees them; an image outside them is resized again by the
    processor.
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

    if hidden_size % heads or (hidden_size // heads) % 2:
        raise ValueError(f"hidden_size {hidden_size} must split into {heads} heads of an even width")
    vocab, merges = _train_tokenizer(vocab_size, names)
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
    head_dim = hidden_size // heads
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // 2),
            "max_position_embeddings": 32768,
            "max_window_layers": layers,
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
        name_ids = word_token_ids(tokenizer, name_words(names))
        if name_ids:  # see NAME_EMBEDDING_STD
            with torch.no_grad():
                embeddings = model.get_input_embeddings().weight
                embeddings[name_ids] = torch.randn(len(name_ids), hidden_size) * NAME_EMBEDDING_STD
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    return out


# -- warm start ------------------------------------------------------------------------------------------------------
WARM_START_STAMP = "rewardmap_warm_start.json"
# 2: the folder's remote-code module imports recipe.cpu.tiny_model; 3: held-out rows, whole-name tokens, minibatches,
# one folder per stamp; 4: the loss's logits at answer positions only, held-out cities' name words frozen, name
# embeddings at NAME_EMBEDDING_STD; 5: copy steps first, then the copyable names weigh as much as the rest
WARM_START_VERSION = 5


def _encode_rows(processor: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's chat prompt (with its images, as the agent loop sees them) followed by its gold answer."""
    from recipe.row_images import chat_messages, row_images
    from reward_fns.gold import gold_response
    from reward_fns.ground_truth import GroundTruth

    tokenizer = processor.tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    encoded = []
    for row in rows:
        text = processor.apply_chat_template(chat_messages(row), add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[text], images=row_images(row) or None, return_tensors="pt")
        gold = gold_response(GroundTruth.from_json(row["reward_model"]["ground_truth"]))
        answer = tokenizer.encode(gold, add_special_tokens=False) + [end]
        encoded.append(
            {
                "ids": inputs["input_ids"][0].tolist() + answer,
                "answer": len(answer),
                "pixel_values": inputs.get("pixel_values"),
                "image_grid_thw": inputs.get("image_grid_thw"),
            }
        )
    return encoded


def _batch(encoded: list[dict[str, Any]], pad: int, image_token: int) -> dict[str, Any]:
    """Right-padded inputs with labels on the answers only, and the rows' images in order."""
    import torch

    width = max(len(e["ids"]) for e in encoded)
    input_ids = torch.tensor([e["ids"] + [pad] * (width - len(e["ids"])) for e in encoded])
    attention_mask = torch.tensor([[1] * len(e["ids"]) + [0] * (width - len(e["ids"])) for e in encoded])
    labels = torch.full_like(input_ids, -100)
    for i, e in enumerate(encoded):
        end = len(e["ids"])
        labels[i, end - e["answer"] : end] = input_ids[i, end - e["answer"] : end]
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    with_images = [e for e in encoded if e["pixel_values"] is not None]
    if with_images:
        inputs.update(
            pixel_values=torch.cat([e["pixel_values"] for e in with_images]),
            image_grid_thw=torch.cat([e["image_grid_thw"] for e in with_images]),
            mm_token_type_ids=((input_ids == image_token) & (attention_mask == 1)).long(),
        )
    return inputs


def _answer_loss(model: Any, batch: dict[str, Any], name_ids: Any = None, names_only: bool = False) -> Any:
    """Next-token loss on the answer tokens, with the LM head applied at those positions only: over the whole
    prompt it was 60% of a step (a vocabulary of every name word, at about 200 positions a row for 25 answered).

    With ``name_ids`` (a tensor of the frozen name words' token ids): the mean loss over the answer's name tokens
    that its prompt contains plus the mean over its other tokens; a name the prompt lacks (a transfer station) is
    left out, as only the map, which a tiny model cannot read, tells it. In one mean over the whole answer, the
    two copyable names of a 25-token answer never got copied (held-out name loss still 11.6 nats after 200 steps,
    8.9 after 2,000); split like this they are (README, "Toy ablation"). ``names_only``: the copyable names' mean
    alone (the warm start's first phase). Without ``name_ids``: the plain mean.
    """
    import torch

    labels = batch.pop("labels")
    hidden = model.model(**batch).last_hidden_state
    model.model.rope_deltas = None  # recomputed from the batch on every full forward
    targets = labels[:, 1:]
    answered = targets != -100
    if name_ids is None or not len(name_ids):
        logits = model.lm_head(hidden[:, :-1][answered])
        return torch.nn.functional.cross_entropy(logits.float(), targets[answered])
    is_name = torch.isin(targets, name_ids)
    in_prompt = torch.stack(
        [
            torch.isin(row_targets, row_ids[row_labels == -100])
            for row_targets, row_ids, row_labels in zip(targets, batch["input_ids"], labels, strict=True)
        ]
    )
    copyable, other = answered & is_name & in_prompt, answered & ~is_name
    kept = copyable | other
    losses = torch.nn.functional.cross_entropy(
        model.lm_head(hidden[:, :-1][kept]).float(), targets[kept], reduction="none"
    )
    parts = [losses[mask[kept]].mean() for mask in ((copyable,) if names_only else (copyable, other)) if mask.any()]
    return torch.stack(parts).sum() if parts else losses.sum() * 0.0  # no copyable name in the batch: zero gradient


def warm_start_tiny_qwen(
    model_dir: str | Path,
    rows: list[dict[str, Any]],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int = 0,
    frozen_words: Sequence[str] = (),
    copy_steps: int = 0,
) -> list[float]:
    """Train the model in ``model_dir`` in place on the rows' gold answers (next-token loss on the answer only):
    ``copy_steps`` steps on the copyable names alone, then ``steps`` on the whole answer (``_answer_loss``).

    A random tiny model barely depends on token positions and never answers right; a short supervised start on
    gold answers of other questions teaches it the answer formats and to copy names from the question, so that
    sampling at temperature 1 reaches every reward component (``recipe.cpu.warm_start.reachability``). Each step
    takes ``batch_size`` rows, passing over the rows in a seeded order. Prompts are the rows' chat prompts with
    their images as the agent loop sees them (``recipe.row_images``), and M-RoPE positions are transformers' own
    (``mm_token_type_ids`` given). The tokens of ``frozen_words`` keep their initial embeddings (input and output:
    they are tied), so that what the model learns about a name is how to copy it, which then holds for the names
    of a run it never saw, not what the name is; the answer's frozen tokens that its prompt contains are the copy
    part of the loss (``_answer_loss``). Copying is learnt first, alone: with the rest of the answer from the
    first step on, it was still not learnt after 600 steps (README, "Toy ablation"). Returns each step's loss.
    """
    import random

    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    tokenizer = processor.tokenizer
    encoded = _encode_rows(processor, rows)
    pad, image_token = tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("<|image_pad|>")
    order: list[int] = []
    rng = random.Random(seed)
    losses = []
    threads = torch.get_num_threads()
    # One thread: this model's matrices are too small for a second to pay, and on a loaded machine OpenMP's
    # waiting threads cost more than they give (a step took 10.7 s on one thread, 28.6 s on two, at load 15).
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, attn_implementation="sdpa")
        model.train()
        embeddings = model.get_input_embeddings().weight
        frozen = torch.tensor(word_token_ids(tokenizer, frozen_words), dtype=torch.long)
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
        for step in range(copy_steps + steps):
            while len(order) < batch_size:  # one seeded pass over the rows after another
                order += rng.sample(range(len(encoded)), len(encoded))
            picked, order = order[:batch_size], order[batch_size:]
            batch = _batch([encoded[i] for i in picked], pad, image_token)
            loss = _answer_loss(model, batch, frozen, names_only=step < copy_steps)
            optimizer.zero_grad()
            loss.backward()
            if len(frozen) and embeddings.grad is not None:
                embeddings.grad[frozen] = 0.0  # Adam's moments of these rows stay 0: no update, ever
            optimizer.step()
            losses.append(loss.item())
    torch.set_num_threads(threads)
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


def warm_start_stamp(
    rows: list[dict[str, Any]],
    *,
    names: Sequence[str] = (),
    frozen_words: Sequence[str] = (),
    hidden_size: int,
    layers: int = 2,
    heads: int = 2,
    steps: int,
    copy_steps: int = 0,
    batch_size: int = 16,
    learning_rate: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything that shapes a warm-started tiny model: sizes, the names' tokens, the rows' digest, steps, batch,
    learning rate, seed, torch's version."""
    import hashlib

    import torch

    words = name_words(names)
    return {
        "version": WARM_START_VERSION,
        "hidden_size": hidden_size,
        "layers": layers,
        "heads": heads,
        "steps": steps,
        "copy_steps": copy_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "rows": len(rows),
        "rows_sha256": rows_digest(rows),
        "name_words": len(words),
        "name_words_sha256": hashlib.sha256("\n".join(words).encode()).hexdigest(),
        "frozen_words_sha256": hashlib.sha256("\n".join(sorted(frozen_words)).encode()).hexdigest(),
        "torch": torch.__version__.split("+")[0],
    }


def stamp_folder(root: str | Path, stamp: dict[str, Any]) -> Path:
    """The folder under ``root`` of the model a stamp describes: one folder per setting, so runs that share a
    setting share the weights and a changed setting never replaces them."""
    import hashlib

    return Path(root).expanduser() / hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]


def prepare_warm_tiny_qwen(
    directory: str | Path,
    rows: list[dict[str, Any]],
    *,
    names: Sequence[str] = (),
    frozen_words: Sequence[str] = (),
    hidden_size: int,
    layers: int = 2,
    heads: int = 2,
    steps: int,
    copy_steps: int = 0,
    batch_size: int = 16,
    learning_rate: float,
    seed: int = 0,
) -> tuple[Path, bool]:
    """The tiny model warm-started on ``rows`` in ``directory``, built unless its stamp (``warm_start_stamp``)
    is already there; (path, built now). Built in a staging folder put in place by ``data_prep.atomic_dir``: a
    killed build leaves the previous model or the new one.
    """
    from data_prep import atomic_dir

    options = {"hidden_size": hidden_size, "layers": layers, "heads": heads, "seed": seed}
    training = {"steps": steps, "copy_steps": copy_steps, "batch_size": batch_size, "learning_rate": learning_rate}
    stamp = warm_start_stamp(rows, names=names, frozen_words=frozen_words, **options, **training)
    out = Path(directory).expanduser()
    stamp_path = out / WARM_START_STAMP
    if stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text()).get("stamp") == stamp:
                return out, False
        except ValueError:
            pass
    with atomic_dir.replacing(out, is_complete=lambda folder: (folder / WARM_START_STAMP).is_file()) as tmp:
        build_tiny_qwen(tmp, names=names, **options)
        losses = warm_start_tiny_qwen(tmp, rows, seed=seed, frozen_words=frozen_words, **training)
        record = {
            "stamp": stamp,
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
        }
        (tmp / WARM_START_STAMP).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out, True
