"""The tiny model of CPU runs, warm-started on held-out synthetic cities, and a step-0 check that it can earn rewards.

A CPU run trains a tiny Qwen2.5-VL (``recipe.cpu.tiny_model``) whose warm start must not decide what the run is
measured on:

- it learns from cities of its own (``data_prep.synthetic`` with the warm start's seed; ``check_held_out`` refuses
  a warm start whose cities or questions occur in any file of the run's data folder: training, validation, test);
- its tokenizer has one token per word of every station and line name of the run's maps and of its own (a model
  this small cannot copy a name spelt in a dozen byte pieces); that is vocabulary, not answers: the name tokens of
  the run's cities are never trained before the run;
- everything that shapes it (sizes, rows, steps, batch, learning rate, seed, names) names its folder, so every
  curriculum and reward mode over the same data starts from the same weights, and a changed setting builds anew.

``reachability`` samples the model on the run's own questions at the run's temperature before training and
counts what the fixed reward would pay: planning answers in the valid format, with detail > 0 (both endpoints
right), correct; VQA answers right. A component no sample reaches gives GRPO no signal for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_FOLDER_PREFIX = "warm_start-"  # the held-out cities' folder in the cache: warm_start-synthetic-...
# Words of names that every answer's shape uses (the format's "xx Station", "Line x", line numbers): trained.
STRUCTURAL_NAME_WORDS = frozenset({"Station", "Line"})


@dataclass(frozen=True)
class WarmStartSettings:
    """The warm start of ``rewardmap.cpu_run`` (configs/dry_run/cpu.yaml): model size, held-out cities, training.

    ``cities`` synthetic cities of ``seed`` with ``questions_per_city`` questions each (planning in the run's
    templates, maps at the run's pixel budget); ``rows`` of their questions of ``question_types`` (all when 0 /
    empty), each of a type in ``repeats`` that many times per pass; ``copy_steps`` then ``steps`` steps of
    ``batch_size`` rows at ``learning_rate``.
    """

    hidden_size: int
    layers: int
    heads: int
    cities: int
    seed: int
    questions_per_city: int
    rows: int
    steps: int
    copy_steps: int  # before ``steps``: the loss on the names the question contains, alone
    batch_size: int
    learning_rate: float
    question_types: tuple[str, ...]  # of the held-out questions, those trained on (empty: all)
    repeats: tuple[tuple[str, int], ...]  # (question type, times each of its rows appears in a pass)
    planning_templates: tuple[str, ...]
    max_pixels: int | None

    @classmethod
    def from_config(cls, config: Any) -> WarmStartSettings:
        run, warm = config.rewardmap.cpu_run, config.rewardmap.cpu_run.warm_start
        max_pixels = config.rewardmap.get("synthetic_max_pixels")
        return cls(
            hidden_size=int(run.hidden_size),
            layers=int(run.layers),
            heads=int(run.heads),
            cities=int(warm.cities),
            seed=int(warm.seed),
            questions_per_city=int(warm.questions_per_city),
            rows=int(warm.rows),
            steps=int(warm.steps),
            copy_steps=int(warm.get("copy_steps") or 0),
            batch_size=int(warm.batch_size),
            learning_rate=float(warm.lr),
            question_types=tuple(str(t) for t in warm.get("question_types") or ()),
            repeats=parse_repeats(warm.get("repeats") or {}),
            planning_templates=tuple(str(t) for t in config.rewardmap.synthetic_planning_templates),
            max_pixels=int(max_pixels) if max_pixels else None,
        )


def parse_repeats(repeats: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """``rewardmap.cpu_run.warm_start.repeats`` as sorted (question type, count) pairs; a count must be an integer
    of at least 1.

    >>> parse_repeats({"planning": 4})
    (('planning', 4),)
    """
    pairs = []
    for kind, count in dict(repeats).items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"rewardmap.cpu_run.warm_start.repeats.{kind}: {count!r} is not an integer >= 1")
        pairs.append((str(kind), int(count)))
    return tuple(sorted(pairs))


def data_files(data_dir: str | Path) -> list[Path]:
    """Every Parquet file of a prepared data folder (stage files, validation, test), sorted."""
    return sorted(Path(data_dir).expanduser().glob("*.parquet"))


def held_out_data(settings: WarmStartSettings, cache_dir: str | Path) -> Path:
    """The warm start's synthetic cities in the cache (generated once per setting)."""
    from data_prep.synthetic import SyntheticParams, generate_dataset
    from recipe.config_resolvers import synthetic_data_dir

    params = SyntheticParams(
        cities=settings.cities,
        seed=settings.seed,
        questions_per_city=settings.questions_per_city,
        planning_templates=settings.planning_templates,
        **({"max_pixels": settings.max_pixels} if settings.max_pixels else {}),
    )
    default = Path(
        synthetic_data_dir(
            str(cache_dir),
            params.cities,
            params.questions_per_city,
            params.planning_templates,
            params.seed,
            settings.max_pixels,
        )
    )
    out = default.with_name(DATA_FOLDER_PREFIX + default.name)
    if not (out / "manifest.json").is_file():  # the writer renames a complete folder into place, or nothing
        generate_dataset(out, params)
    return out


def _ground_truths(files: Sequence[Path]) -> Iterator[tuple[Path, str, str]]:
    """(file, question text, ground-truth JSON) of every row, reading only those two columns."""
    import pyarrow.parquet as pq

    for path in files:
        table = pq.read_table(path, columns=["prompt", "reward_model"])
        for prompt, reward_model in zip(
            table.column("prompt").to_pylist(), table.column("reward_model").to_pylist(), strict=True
        ):
            text = "\n".join(str(m.get("content", "")) for m in prompt or [] if isinstance(m, Mapping))
            yield path, text, str((reward_model or {}).get("ground_truth") or "")


def _network(ground_truth: str) -> tuple[str, str, dict[str, list[str]]]:
    """(network digest, city, network) of a ground-truth JSON."""
    record = json.loads(ground_truth)
    network = record.get("network") or {}
    digest = hashlib.sha256(json.dumps(network, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return digest, str(record.get("city", "")), network


def check_held_out(warm_dir: str | Path, data_dir: str | Path) -> None:
    """Raise ValueError unless no warm-start city (network) and no warm-start question (question on that network)
    occurs in any file of ``data_dir``."""
    theirs: dict[str, tuple[Path, str]] = {}
    questions: set[tuple[str, str]] = set()
    for path, text, ground_truth in _ground_truths(data_files(data_dir)):
        digest, city, _ = _network(ground_truth)
        theirs.setdefault(digest, (path, city))
        questions.add((digest, text))
    for path, text, ground_truth in _ground_truths(data_files(warm_dir)):
        digest, city, _ = _network(ground_truth)
        if digest in theirs or (digest, text) in questions:
            other, other_city = theirs.get(digest, (Path(data_dir), "?"))
            raise ValueError(
                f"the warm start's city {city!r} ({path}) is the run's city {other_city!r} ({other}): a warm start "
                "must not see the run's questions; give rewardmap.cpu_run.warm_start.seed another value"
            )


def map_names(files: Sequence[Path]) -> list[str]:
    """Every station and line name of the networks in ``files``, sorted."""
    names: set[str] = set()
    seen: set[str] = set()
    for _, _, ground_truth in _ground_truths(files):
        if ground_truth in seen:
            continue
        seen.add(ground_truth)
        _, _, network = _network(ground_truth)
        for line, stations in network.items():
            names.add(str(line))
            names.update(str(s) for s in stations)
    return sorted(names)


def frozen_name_words(run_names: Sequence[str], warm_names: Sequence[str]) -> list[str]:
    """The name words the warm start never trains (``warm_start_tiny_qwen``): every word of the run's and the
    held-out cities' names but the structural ones and numbers, so the model learns to copy a name, whatever its
    embedding, rather than the names it trained on.

    The run's words too: never a target, their tied output embeddings would still be pushed down through the
    softmax at every step. Shared words ("North", "Hill") too: trained, they were not copied ("Cogol East" came
    out "Cogol Station"; README, "Toy ablation").

    >>> frozen_name_words(["Kobo North Station", "Line 2"], ["Tam Station"])
    ['Kobo', 'North', 'Tam']
    """
    from recipe.cpu.tiny_model import name_words

    words = name_words([*run_names, *warm_names])
    return [w for w in words if w not in STRUCTURAL_NAME_WORDS and not w.isdigit()]


def read_rows(
    files: Sequence[Path],
    *,
    limit: int = 0,
    seed: int = 0,
    question_types: Sequence[str] = (),
    repeats: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``files`` with absolute image paths (those of ``question_types`` when given): all of them, or
    ``limit`` of them in a seeded draw; then each row of a type in ``repeats`` that many times."""
    import pyarrow.parquet as pq

    from data_prep.image_files import resolve_row_images

    kinds_rows = []  # (question type, row): the type is read once, for the filter and the repeats
    for path in files:
        for i, row in enumerate(pq.read_table(path).to_pylist()):
            kind = json.loads(row["reward_model"]["ground_truth"]).get("question_type")
            if not question_types or kind in question_types:
                kinds_rows.append((kind, resolve_row_images(row, [path.parent], where=f"{path} row {i}")))
    if limit and limit < len(kinds_rows):
        kinds_rows = random.Random(f"rewardmap-warm-start-rows:{seed}").sample(kinds_rows, limit)
    repeats = repeats or {}
    if unknown := sorted(set(repeats) - {kind for kind, _ in kinds_rows}):
        raise ValueError(f"rewardmap.cpu_run.warm_start.repeats: no row of question type {unknown} in {files}")
    return [row for kind, row in kinds_rows for _ in range(repeats.get(kind, 1))]


def prepare_tiny_model(
    settings: WarmStartSettings, *, model_root: str | Path, data_dir: str | Path, cache_dir: str | Path
) -> tuple[Path, bool, int]:
    """The warm-started tiny model for a run on ``data_dir``: (folder, built now, warm-start rows)."""
    from recipe.cpu.tiny_model import prepare_warm_tiny_qwen, stamp_folder, warm_start_stamp

    warm_dir = held_out_data(settings, cache_dir)
    check_held_out(warm_dir, data_dir)
    warm_files = data_files(warm_dir)
    rows = read_rows(
        warm_files,
        limit=settings.rows,
        seed=settings.seed,
        question_types=settings.question_types,
        repeats=dict(settings.repeats),
    )
    if not rows:
        raise ValueError(f"the warm start has no rows of {list(settings.question_types)} in {warm_dir}")

    run_names, warm_names = map_names(data_files(data_dir)), map_names(warm_files)
    shape = {
        "names": sorted(set(run_names) | set(warm_names)),
        "frozen_words": frozen_name_words(run_names, warm_names),
        "hidden_size": settings.hidden_size,
        "layers": settings.layers,
        "heads": settings.heads,
        "steps": settings.steps,
        "copy_steps": settings.copy_steps,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "seed": settings.seed,
    }
    folder = stamp_folder(model_root, warm_start_stamp(rows, **shape))
    folder, built = prepare_warm_tiny_qwen(folder, rows, **shape)
    return folder, built, len(rows)


# -- step-0 reachability ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reachability:
    """What samples of the untrained-by-RL model earn under the fixed reward (counts of samples)."""

    temperature: float
    planning: int = 0
    planning_format: int = 0
    planning_detail: int = 0  # detail > 0: both endpoints right
    planning_correct: int = 0
    vqa: int = 0
    vqa_format: int = 0
    vqa_correct: int = 0

    def problems(self) -> list[str]:
        """The components no sample reached (a correct route is not required: the sparse reward may lack it)."""
        found = []
        if self.planning and not self.planning_format:
            found.append("no planning answer in the valid format")
        if self.planning and not self.planning_detail:
            found.append("no planning answer with detail > 0 (both endpoints right)")
        if self.vqa and not self.vqa_correct:
            found.append("no VQA answer right")
        return found

    def line(self) -> str:
        parts = []
        if self.planning:
            parts.append(
                f"planning format {self.planning_format}/{self.planning}, detail > 0 "
                f"{self.planning_detail}/{self.planning}, correct {self.planning_correct}/{self.planning}"
            )
        if self.vqa:
            parts.append(f"VQA right {self.vqa_correct}/{self.vqa} (boxed {self.vqa_format}/{self.vqa})")
        return f"step-0 reachability at temperature {self.temperature:g}: " + "; ".join(parts or ["no questions"])


def reachability(
    model_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    seed: int = 0,
) -> Reachability:
    """Sample each row's question ``samples`` times as the rollout server does (``recipe.cpu.rollout``, batched)
    and count what the fixed reward pays (``reward_fns.compute_score``)."""
    from transformers import AutoProcessor

    import recipe.cpu.tiny_model  # noqa: F401  (registers the tiny processor's stand-in video processor)
    from recipe.cpu.rollout import TransformersRolloutServer
    from recipe.row_images import chat_messages, row_images
    from reward_fns import compute_score

    processor = AutoProcessor.from_pretrained(model_dir)
    server = TransformersRolloutServer(
        str(model_dir), trust_remote_code=False, response_length=max_new_tokens, seed=seed
    )
    requests = []
    for row in rows:
        text = processor.apply_chat_template(chat_messages(dict(row)), add_generation_prompt=True, tokenize=False)
        images = row_images(dict(row))
        ids = processor(text=[text], images=images or None, return_tensors="pt")["input_ids"][0].tolist()
        requests += [(row, ids, images)] * samples
    params = {"temperature": temperature, "top_p": 1.0, "top_k": -1, "max_tokens": max_new_tokens}

    async def all_at_once() -> list[Any]:
        calls = [
            server.generate(str(i), prompt_ids=ids, sampling_params=params, image_data=images)
            for i, (_, ids, images) in enumerate(requests)
        ]
        return list(await asyncio.gather(*calls))

    counts = dict.fromkeys(
        ("planning", "planning_format", "planning_detail", "planning_correct", "vqa", "vqa_format", "vqa_correct"), 0
    )
    for (row, _, _), output in zip(requests, asyncio.run(all_at_once()), strict=True):
        response = processor.tokenizer.decode(output.token_ids, skip_special_tokens=True)
        result = compute_score(row.get("data_source"), response, row["reward_model"]["ground_truth"], mode="fixed")
        if json.loads(row["reward_model"]["ground_truth"]).get("question_type") == "planning":
            counts["planning"] += 1
            counts["planning_format"] += result["format"] > 0
            counts["planning_detail"] += result["detail"] > 0
            counts["planning_correct"] += result["acc"] > 0
        else:
            counts["vqa"] += 1
            counts["vqa_format"] += result["format"] > 0
            counts["vqa_correct"] += result["acc"] > 0
    return Reachability(temperature=temperature, **counts)


def precheck_rows(stage_files: Sequence[str | Path], per_file: int) -> list[dict[str, Any]]:
    """The first ``per_file`` rows of each of the run's stage files, image paths absolute."""
    import pyarrow.parquet as pq

    from data_prep.image_files import resolve_row_images

    rows: list[dict[str, Any]] = []
    for file in dict.fromkeys(str(f) for f in stage_files):
        path = Path(os.path.expanduser(file))
        with pq.ParquetFile(path) as parquet:
            batch = next(parquet.iter_batches(batch_size=per_file), None)
        for i, row in enumerate(batch.to_pylist() if batch is not None else []):
            rows.append(resolve_row_images(row, [path.parent], where=f"{file} row {i}"))
    return rows
