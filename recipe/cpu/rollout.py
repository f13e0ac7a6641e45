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
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
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


def server_actor_name(replica_rank: int) -> str:
    """Ray name of a replica's server actor: how the adapter in the actor worker finds it."""
    return f"rewardmap_transformers_server_{replica_rank}"


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
        self.global_steps: int | None = None
        self.lora_base: dict[str, torch.Tensor] = {}  # LoRA: the adapted weights' base (load_lora_base)
        self.digest = state_digest(self.model.state_dict().items())
        self._lock = asyncio.Lock()
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
        """Sample one response to ``prompt_ids`` (with its images); one request at a time, off the event loop."""
        if video_data:
            raise NotImplementedError("the transformers rollout backend does not generate from videos")
        async with self._lock:
            token_ids, log_probs = await asyncio.to_thread(
                self._generate, list(prompt_ids), sampling_params, image_data
            )
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs if sampling_params.get("logprobs") else None,
            stop_reason="completed",
            num_preempted=0,
            extra_fields={"global_steps": self.global_steps},
        )

    @torch.no_grad()
    def _generate(
        self, prompt_ids: list[int], sampling_params: dict[str, Any], images: list[Any] | None
    ) -> tuple[list[int], list[float]]:
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if images:
            pixels = self.image_processor(images=images, return_tensors="pt")
            inputs["pixel_values"] = pixels["pixel_values"]
            inputs["image_grid_thw"] = pixels["image_grid_thw"]
            kinds = torch.zeros_like(input_ids)
            if self.image_token_id is not None:
                kinds[input_ids == self.image_token_id] = 1
            if self.video_token_id is not None:
                kinds[input_ids == self.video_token_id] = 2
            inputs["mm_token_type_ids"] = kinds
        temperature = float(sampling_params.get("temperature", 1.0))
        top_k = int(sampling_params.get("top_k", -1) or -1)
        top_p = float(sampling_params.get("top_p", 1.0) or 1.0)
        max_tokens = int(sampling_params.get("max_tokens") or sampling_params.get("max_new_tokens") or 0)
        max_tokens = min(max_tokens, self.response_length) if max_tokens > 0 else self.response_length
        sample = temperature > 0
        output = self.model.generate(
            **inputs,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_k=top_k if sample and top_k > 0 else None,
            top_p=top_p if sample and top_p < 1.0 else None,
            max_new_tokens=max_tokens,
            suppress_tokens=self.vision_token_ids,  # never sample an image placeholder (module doc)
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        self.model.model.rope_deltas = None  # the next prompt has other images: never reuse this one's M-RoPE offset
        new_tokens = output.sequences[0, input_ids.shape[1] :].tolist()
        logits = torch.cat(output.logits, dim=0).float()  # (new tokens, vocab): raw, before the vision mask
        if sample:
            logits = logits / temperature
        steps = logits.log_softmax(dim=-1)
        token_ids: list[int] = []
        log_probs: list[float] = []
        for position, token in enumerate(new_tokens):
            token_ids.append(int(token))
            log_probs.append(float(steps[position, token]))
            if token in self.eos_token_ids:
                break
        return token_ids, log_probs

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
