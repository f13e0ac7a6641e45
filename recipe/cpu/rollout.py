"""Rollout backend ``transformers``: a verl rollout server that generates with plain transformers on CPU.

verl 0.9.1 registers rollout backends for vLLM, SGLang and TensorRT-LLM only. This module adds one through verl's
own tables, so the trainer, agent loop, load balancer and checkpoint engine run unchanged:

- ``TransformersReplica`` (``RolloutReplicaRegistry``, name ``transformers``): in the sync trainer's hybrid mode it
  launches one ``TransformersRolloutServer`` Ray actor per replica, named ``server_actor_name(replica_rank)``;
- ``TransformersRolloutServer``: token in, token out (``generate`` returns verl's ``TokenOutput`` with the sampled
  tokens' log-probs and the weight version), plus the sleep / wake-up / weight-update calls verl makes on a
  server;
- ``TransformersServerAdapter`` (``_ROLLOUT_REGISTRY[("transformers", "async")]``): the ``BaseRollout`` that verl's
  ``ActorRolloutRefWorker`` builds next to the FSDP actor. verl's naive checkpoint engine hands it the actor's
  full tensors after every update (``engine_workers.py`` ``update_weights``); it sends them to the server, which
  loads them and checks that its parameters now hash to the digest of the tensors sent
  (``recipe.cpu.weight_sync.state_digest``).
  Each sync is appended to ``$REWARDMAP_WEIGHT_SYNC_LOG`` (JSON lines) when that is set.

LoRA (``actor_rollout_ref.model.lora_rank`` > 0, verl's default ``model.lora.merge=false``): verl sends what vLLM's
LoRA path takes (``engine_workers.py`` ``update_weights``; ``vllm_rollout/utils.py`` ``update_weights_from_ipc``):
once the base weights (``peft_config`` set, ``base_sync_done=False``; adapted modules named ``<module>.base_layer.
weight``), then every step only the adapter (``base_sync_done=True``: PEFT's ``lora_A``/``lora_B`` tensors and the
``peft_config`` dict), which vLLM serves as a LoRA adapter. This server has no adapter slots: it keeps the base weights
and serves ``W = W_base + lora_alpha / r x B @ A`` for every adapted module (``merge_lora``), the same function of the
same tensors. ``model.lora.merge=true`` needs nothing here: verl then sends merged full weights.

Generation never samples vision tokens (``<|image_pad|>`` and friends): a tiny model would otherwise emit them, and
a response holding an image placeholder breaks the agent loop's M-RoPE position computation. The mask only
applies to sampling: the log-prob reported for each token is the model's own (``log_softmax(logits /
temperature)``, what verl's actor computes), so ``training/rollout_probs_diff_*`` measures engine agreement.

Image prompts: the server rebuilds ``pixel_values``/``image_grid_thw`` with the model's image processor, and
passes ``mm_token_type_ids`` (image placeholders marked 1, video 2, as verl's agent loop builds them) so that
transformers computes Qwen2.5-VL's 3-D M-RoPE positions; without it transformers falls back to 1-D positions.

Batching: verl's agent loop sends every sample of a step as its own concurrent request. The server collects the
requests that arrive together (until none has arrived for ``COLLECT_IDLE_S``, at most ``COLLECT_MAX_S`` after the
first, at most ``MAX_BATCH``), and answers those with the same sampling parameters with one left-padded
``generate``; requests that arrive while it runs form the next batch. Under greedy decoding a batched request gets
the tokens and log-probs it would get alone (transformers computes M-RoPE positions and the rope offset per row
from the attention mask).

Seeded sampling: which requests share a batch, and in what order, depends on when the agent loop's coroutines
reach the server, so a sampler drawing from one global RNG gave the same command different samples on every run
(the README's toy ablation saw step-1 rewards of 0.56 and 1.96 from the same weights and prompts). Each sampled
request instead gets its own seed when it arrives: a hash of the server's seed, the weight version
(``global_steps``), the prompt (ids and image bytes) and how many requests with that same prompt came before it
under these weights; ``SeededSampler`` then draws each row's tokens from its own generator (Gumbel-max: the argmax
of ``logits / temperature`` plus Gumbel noise is a sample of the softmax). Requests with the same prompt are
interchangeable (a GRPO group), so a step's samples per prompt are the same whatever the arrival order, batch
split, or a resume from a checkpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from verl.workers.rollout.base import _ROLLOUT_REGISTRY, BaseRollout
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry, TokenOutput

from recipe.cpu.weight_sync import append_sync_log, state_digest

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

ROLLOUT_NAME = "transformers"
VISION_TOKEN_ATTRIBUTES = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
# Request batching (module docstring): a batch closes when no request came for COLLECT_IDLE_S, COLLECT_MAX_S after
# its first request, or at MAX_BATCH requests.
COLLECT_IDLE_S = 0.05
COLLECT_MAX_S = 1.0
MAX_BATCH = 128


def server_actor_name(replica_rank: int) -> str:
    """Ray name of a replica's server actor: how the adapter in the actor worker finds it."""
    return f"rewardmap_transformers_server_{replica_rank}"


@dataclass(frozen=True)
class Sampling:
    """The sampling parameters one ``generate`` call applies to every row (requests batch only when equal)."""

    temperature: float
    top_k: int
    top_p: float
    max_tokens: int

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class _Request:
    prompt_ids: list[int]
    images: list[Any]
    sampling: Sampling
    seed: int  # its sampling seed (module doc); unused when greedy
    done: asyncio.Future = field(repr=False)


def prompt_digest(prompt_ids: list[int], images: list[Any]) -> str:
    """What a request asks: its prompt ids and its images' pixels (two maps may share a question's text)."""
    digest = hashlib.sha256(repr(list(prompt_ids)).encode())
    for image in images:
        pixels = getattr(image, "tobytes", None)
        digest.update(pixels() if callable(pixels) else repr(image).encode())
        digest.update(repr(getattr(image, "size", None)).encode())
    return digest.hexdigest()


def request_seed(server_seed: int, global_steps: int | None, digest: str, occurrence: int) -> int:
    """The sampling seed of the ``occurrence``-th request for ``digest`` under the weights of ``global_steps``."""
    key = f"{server_seed}/{global_steps}/{digest}/{occurrence}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


class SeededSampler:
    """A transformers logits processor that makes greedy decoding sample: row ``i`` draws from its own generator
    (seeded ``seeds[i]``), under ``temperature``, ``top_k`` and ``top_p``, by the Gumbel-max trick.

    >>> sampler = SeededSampler([7, 7, 8], temperature=1.0)
    >>> picks = sampler(None, torch.zeros(3, 50)).argmax(-1).tolist()
    >>> picks[0] == picks[1]
    True
    """

    def __init__(self, seeds: list[int], *, temperature: float, top_k: int = -1, top_p: float = 1.0) -> None:
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def __call__(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float() / self.temperature
        if 0 < self.top_k < scores.shape[-1]:
            kth = scores.topk(self.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1.0:
            ordered, order = scores.sort(dim=-1, descending=True)
            probs = ordered.softmax(dim=-1)
            beyond = (probs.cumsum(dim=-1) - probs) >= self.top_p  # the tokens after the top-p set is complete
            scores = scores.masked_fill(beyond.scatter(-1, order, beyond), float("-inf"))
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(uniform.dtype).tiny)))
        return scores + gumbel


class TransformersRolloutServer:
    """A transformers model behind verl's server interface (token-in, token-out), on CPU."""

    def __init__(self, model_path: str, *, trust_remote_code: bool, response_length: int, seed: int) -> None:
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        self.response_length = int(response_length)
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.model = AutoModelForImageTextToText.from_pretrained(
            model_path, dtype=torch.float32, attn_implementation="sdpa", trust_remote_code=trust_remote_code
        ).eval()
        processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.image_processor = processor.image_processor
        self.image_token_id = getattr(config, "image_token_id", None)
        self.video_token_id = getattr(config, "video_token_id", None)
        tokenizer = processor.tokenizer
        vision_ids = {getattr(config, attr, None) for attr in VISION_TOKEN_ATTRIBUTES}
        vision_ids |= {tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS if t in tokenizer.get_vocab()}
        self.vision_token_ids = sorted(int(i) for i in vision_ids if i is not None)
        generation = self.model.generation_config
        eos = generation.eos_token_id if generation.eos_token_id is not None else tokenizer.eos_token_id
        self.eos_token_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos])]
        self.pad_token_id = int(
            generation.pad_token_id if generation.pad_token_id is not None else self.eos_token_ids[0]
        )
        self.pad_side_token_id = (
            int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else self.pad_token_id
        )
        self.global_steps: int | None = None
        self.lora_base: dict[str, torch.Tensor] = {}  # LoRA: the adapted weights' base (load_lora_base)
        self.digest = state_digest(self.model.state_dict().items())
        self._queue: list[_Request] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop serving requests; the two below belong to it
        self._arrived: asyncio.Event | None = None
        self._batcher: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # size of every generate call, for tests and timing
        self.seed = int(seed)
        self._drawn: dict[str, int] = {}  # sampled requests per prompt digest under the weights of _drawn_version
        self._drawn_version: int | None = None
        torch.manual_seed(seed)

    # -- generation ---------------------------------------------------------------------------------------------
    async def generate(
        self,
        request_id: str,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        """Sample one response to ``prompt_ids`` (with its images), batched with concurrent requests (module doc)."""
        if video_data:
            raise NotImplementedError("the transformers rollout backend does not generate from videos")
        loop = asyncio.get_running_loop()
        sampling, images = self._sampling(sampling_params), list(image_data or [])
        seed = 0 if sampling.greedy else self._next_seed(prompt_ids, images)
        request = _Request(list(prompt_ids), images, sampling, seed, loop.create_future())
        if self._loop is not loop:  # Ray keeps one loop; asyncio.run (tests, tools) makes a new one per call
            self._loop, self._arrived, self._batcher = loop, asyncio.Event(), None
        assert self._arrived is not None
        self._queue.append(request)
        self._arrived.set()
        if self._batcher is None or self._batcher.done():
            self._batcher = loop.create_task(self._serve())
        token_ids, log_probs = await request.done
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs if sampling_params.get("logprobs") else None,
            stop_reason="completed",
            num_preempted=0,
            extra_fields={"global_steps": self.global_steps},
        )

    def _next_seed(self, prompt_ids: list[int], images: list[Any]) -> int:
        """The arriving request's sampling seed (module doc: seeded sampling)."""
        if self._drawn_version != self.global_steps:  # new weights: counting starts over
            self._drawn, self._drawn_version = {}, self.global_steps
        digest = prompt_digest(prompt_ids, images)
        occurrence = self._drawn.get(digest, 0)
        self._drawn[digest] = occurrence + 1
        return request_seed(self.seed, self.global_steps, digest, occurrence)

    def _sampling(self, params: dict[str, Any]) -> Sampling:
        temperature = float(params.get("temperature", 1.0))
        max_tokens = int(params.get("max_tokens") or params.get("max_new_tokens") or 0)
        return Sampling(
            temperature=temperature,
            top_k=int(params.get("top_k", -1) or -1),
            top_p=float(params.get("top_p", 1.0) or 1.0),
            max_tokens=min(max_tokens, self.response_length) if max_tokens > 0 else self.response_length,
        )

    async def _serve(self) -> None:
        """Answer queued requests in batches until the queue is empty (restarted by the next request)."""
        try:
            await self._serve_batches()
        except BaseException as error:  # a failure here must reach the waiting requests, never leave them hanging
            queued, self._queue = self._queue, []
            for request in queued:
                if not request.done.done():
                    request.done.set_exception(error if isinstance(error, Exception) else RuntimeError(repr(error)))
            raise

    async def _serve_batches(self) -> None:
        while self._queue:
            await self._collect()
            first = self._queue[0].sampling
            batch = [r for r in self._queue if r.sampling == first][:MAX_BATCH]
            taken = {id(r) for r in batch}
            self._queue = [r for r in self._queue if id(r) not in taken]
            try:
                results = await asyncio.to_thread(
                    self._generate,
                    [r.prompt_ids for r in batch],
                    [r.images for r in batch],
                    first,
                    [r.seed for r in batch],
                )
            except Exception as error:  # every waiting request gets the error, none hangs
                for request in batch:
                    if not request.done.done():
                        request.done.set_exception(error)
                continue
            for request, result in zip(batch, results, strict=True):
                if not request.done.done():
                    request.done.set_result(result)

    async def _collect(self) -> None:
        """Wait while requests keep arriving (see COLLECT_IDLE_S / COLLECT_MAX_S / MAX_BATCH)."""
        assert self._arrived is not None
        deadline = time.monotonic() + COLLECT_MAX_S
        while len(self._queue) < MAX_BATCH and time.monotonic() < deadline:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=COLLECT_IDLE_S)
            except TimeoutError:
                return

    @torch.no_grad()
    def _generate(
        self, prompts: list[list[int]], images: list[list[Any]], sampling: Sampling, seeds: list[int]
    ) -> list[tuple[list[int], list[float]]]:
        """One left-padded ``generate`` over the prompts (row ``i`` sampled with ``seeds[i]``); each row's tokens up
        to its first EOS and their log-probs."""
        from transformers import LogitsProcessorList

        width = max(len(p) for p in prompts)
        pad = self.pad_token_id  # left padding, masked out
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], dtype=torch.long)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        flat_images = [image for row in images for image in row]
        if flat_images:
            pixels = self.image_processor(images=flat_images, return_tensors="pt")
            inputs["pixel_values"] = pixels["pixel_values"]
            inputs["image_grid_thw"] = pixels["image_grid_thw"]
            kinds = torch.zeros_like(input_ids)
            if self.image_token_id is not None:
                kinds[(input_ids == self.image_token_id) & (attention_mask == 1)] = 1
            if self.video_token_id is not None:
                kinds[(input_ids == self.video_token_id) & (attention_mask == 1)] = 2
            inputs["mm_token_type_ids"] = kinds
        sample = not sampling.greedy
        self.batch_sizes.append(len(prompts))
        # Sampling is the argmax of SeededSampler's scores, after transformers' own processors (the vision mask).
        sampler = SeededSampler(seeds, temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p)
        output = self.model.generate(
            **inputs,
            do_sample=False,
            logits_processor=LogitsProcessorList([sampler] if sample else []),
            max_new_tokens=sampling.max_tokens,
            suppress_tokens=self.vision_token_ids,  # never sample an image placeholder (module doc)
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        self.model.model.rope_deltas = None  # the next batch has other images: never reuse this one's M-RoPE offset
        logits = torch.stack(output.logits, dim=1).float()  # (rows, new tokens, vocab): raw, before the vision mask
        if sample:
            logits = logits / sampling.temperature
        steps = logits.log_softmax(dim=-1)
        results = []
        for row in range(len(prompts)):
            token_ids: list[int] = []
            log_probs: list[float] = []
            for position, token in enumerate(output.sequences[row, width:].tolist()):
                token_ids.append(int(token))
                log_probs.append(float(steps[row, position, token]))
                if token in self.eos_token_ids:
                    break
            results.append((token_ids, log_probs))
        return results

    # -- weights ------------------------------------------------------------------------------------------------
    def load_lora_base(self, state: dict[str, torch.Tensor], global_steps: int | None, sent_digest: str) -> str:
        """Load the base weights of a LoRA run (adapted modules sent as ``<module>.base_layer.weight``) and keep the
        adapted modules' base for ``load_lora_adapter``."""
        plain = {name.replace(".base_layer.", "."): tensor for name, tensor in state.items()}
        self.lora_base = {
            name.replace(".base_layer.", "."): t.clone() for name, t in state.items() if ".base_layer." in name
        }
        return self.load_weights(plain, global_steps, state_digest(plain.items()), kind="lora base", sent=sent_digest)

    def load_lora_adapter(
        self, adapter: dict[str, torch.Tensor], peft_config: dict[str, Any], global_steps: int | None, sent_digest: str
    ) -> str:
        """Serve the base weights plus this adapter (``merge_lora``); raises unless the adapter arrived intact."""
        received = state_digest(adapter.items())
        if received != sent_digest:
            raise RuntimeError(f"LoRA adapter differs from the actor's after sync: {received} != {sent_digest}")
        own = self.model.state_dict()
        if not self.lora_base:  # no base sync (a real load_format): the weights loaded from disk
            self.lora_base = {name: own[name].clone() for name in lora_targets(adapter, own)}
        merged = merge_lora(self.lora_base, adapter, peft_config)
        with torch.no_grad():
            for name, tensor in merged.items():
                own[name].copy_(tensor.to(own[name].dtype))
        self.digest, self.global_steps = state_digest(self.model.state_dict().items()), global_steps
        append_sync_log(
            {
                "side": "rollout",
                "engine": ROLLOUT_NAME,
                "global_steps": global_steps,
                "kind": "lora adapter",
                "adapter_digest": received,
                "digest": self.digest,
                "tensors": len(adapter),
                "modules": len(merged),
                "time": time.time(),
            }
        )
        return self.digest

    def load_weights(
        self,
        state: dict[str, torch.Tensor],
        global_steps: int | None,
        sent_digest: str,
        *,
        kind: str = "full",
        sent: str | None = None,
    ) -> str:
        """Load the actor's full tensors; raises unless the model's parameters now hash to ``sent_digest``."""
        own = self.model.state_dict()
        unknown = sorted(set(state) - set(own))
        missing = sorted(set(own) - set(state))
        if unknown or missing:
            raise KeyError(f"weight names differ from the rollout model: unknown {unknown[:5]}, missing {missing[:5]}")
        with torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor.to(own[name].dtype))
        loaded = state_digest((name, tensor.to(state[name].dtype)) for name, tensor in self.model.state_dict().items())
        if loaded != sent_digest:
            raise RuntimeError(f"rollout weights differ from the actor's after sync: {loaded} != {sent_digest}")
        self.digest, self.global_steps = loaded, global_steps
        record = {
            "side": "rollout",
            "engine": ROLLOUT_NAME,
            "global_steps": global_steps,
            "digest": loaded,
            "tensors": len(state),
            "time": time.time(),
        }
        if kind != "full":
            record.update(kind=kind, sent_digest=sent)
        append_sync_log(record)
        return loaded

    def weight_digest(self) -> str:
        """Digest of the weights the server generates with (``state_digest``)."""
        return self.digest

    # -- the lifecycle calls verl makes on a server: nothing to free or restore on CPU ----------------------------
    def ready(self) -> bool:
        return True

    def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        return {}

    async def resume_generation(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None


def lora_targets(adapter: dict[str, torch.Tensor], own: dict[str, Any]) -> list[str]:
    """The model's weight names the adapter's ``lora_A`` tensors adapt (PEFT names, ``base_model.model.`` prefix)."""
    names = []
    for key in adapter:
        if key.endswith(".lora_A.weight"):
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight") + ".weight"
            if name not in own:
                raise KeyError(f"LoRA adapter tensor {key} adapts no weight of the rollout model ({name})")
            names.append(name)
    return names


def merge_lora(base: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor], peft_config: dict[str, Any]) -> dict:
    """``W_base + scaling x B @ A`` for every adapted weight, as PEFT merges a LoRA layer (``scaling = lora_alpha / r``,
    ``lora_alpha / sqrt(r)`` with rsLoRA); the PEFT options this server does not implement are refused by name.

    >>> base = {"m.weight": torch.zeros(2, 3)}
    >>> adapter = {"base_model.model.m.lora_A.weight": torch.ones(1, 3)}
    >>> adapter["base_model.model.m.lora_B.weight"] = torch.ones(2, 1)
    >>> merge_lora(base, adapter, {"r": 1, "lora_alpha": 2})["m.weight"].tolist()
    [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
    """
    unsupported = [
        key
        for key in ("use_dora", "fan_in_fan_out", "rank_pattern", "alpha_pattern", "lora_bias")
        if peft_config.get(key)
    ]
    if unsupported:
        raise NotImplementedError(f"the transformers rollout backend cannot serve LoRA with {unsupported}")
    rank, alpha = int(peft_config["r"]), float(peft_config["lora_alpha"])
    scaling = alpha / (rank**0.5 if peft_config.get("use_rslora") else rank)
    merged = {}
    for name in lora_targets(adapter, base):
        prefix = "base_model.model." + name.removesuffix(".weight")
        lora_a, lora_b = adapter[f"{prefix}.lora_A.weight"], adapter[f"{prefix}.lora_B.weight"]
        delta = (lora_b.to(torch.float32) @ lora_a.to(torch.float32)) * scaling
        merged[name] = base[name].to(torch.float32) + delta
    return merged


class TransformersReplica(RolloutReplica):
    """One rollout replica: a ``TransformersRolloutServer`` actor, for verl's hybrid (colocated) sync trainer."""

    def rollout_worker_use_gpu(self) -> bool:
        return False

    async def launch_servers(self) -> None:
        model = self.model_config
        server = (
            ray.remote(TransformersRolloutServer)
            .options(name=server_actor_name(self.replica_rank), num_cpus=0, max_concurrency=self.max_concurrency)
            .remote(
                str(model.get("local_path") or model.path),
                trust_remote_code=bool(model.get("trust_remote_code", False)),
                response_length=int(self.config.response_length),
                seed=int(self.config.seed),
            )
        )
        await server.ready.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{ROLLOUT_NAME}://replica-{self.replica_rank}"


class TransformersServerAdapter(BaseRollout):
    """The rollout side of verl's actor worker: forwards weight updates to its replica's server actor."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1, **kwargs: Any):
        super().__init__(config, model_config, device_mesh)
        world_size = self.config.tensor_model_parallel_size * self.config.data_parallel_size
        world_size *= self.config.pipeline_model_parallel_size
        rank = int(os.environ.get("RANK", 0))
        self.replica_rank = replica_rank if replica_rank >= 0 else rank // world_size
        self.is_server_rank = rank % world_size == 0
        self._server: Any = None

    def _server_handle(self) -> Any:
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(
        self,
        weights: Any,
        wire_format: str = "named_tensors",
        peft_config: dict[str, Any] | None = None,
        base_sync_done: bool = False,
        **kwargs: Any,
    ) -> None:
        """Full tensors, or (LoRA, module doc) the base weights once and then the adapter each step."""
        if wire_format != "named_tensors":
            raise NotImplementedError(f"the transformers rollout backend takes full tensors, not {wire_format!r}")
        state = {name: tensor.detach().to("cpu").clone() for name, tensor in weights}
        if not self.is_server_rank:
            return
        digest, steps, server = state_digest(state.items()), kwargs.get("global_steps"), self._server_handle()
        if peft_config is None:
            await server.load_weights.remote(state, steps, digest)
        elif not base_sync_done:
            await server.load_lora_base.remote(state, steps, digest)
        else:
            await server.load_lora_adapter.remote(state, dict(peft_config), steps, digest)
        kind = "full" if peft_config is None else "lora base" if not base_sync_done else "lora adapter"
        append_sync_log(
            {
                "side": "actor",
                "engine": ROLLOUT_NAME,
                "kind": kind,
                "global_steps": steps,
                "digest": digest,
                "tensors": len(state),
                "time": time.time(),
            }
        )


def register_transformers_rollout() -> None:
    """Add the ``transformers`` backend to verl's replica registry and rollout-class table (idempotent)."""
    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: TransformersReplica)
    _ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.TransformersServerAdapter"
