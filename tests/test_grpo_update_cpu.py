"""GRPO updates of a tiny Qwen2.5-VL through verl's own FSDP2 training engine, on CPU, with this recipe's rewards.

The batch is built the way verl 0.9.1's trainer builds it, from verl's own code wherever it runs on CPU:

1. two schema rows (one pre-resized map each) load through the recipe's dataset class; verl's ``SingleTurnAgentLoop``
   builds each prompt (against a fake LLM server that answers the gold answer or junk: 2 prompts x 2 responses), and
   ``AgentLoopWorker``'s post-processing pads it and adds ``pixel_values``/``image_grid_thw`` and M-RoPE positions;
2. rewards: verl's ``RewardLoopWorker`` (in-process) running ``RewardMapRewardManager``, then ``rm_scores`` as
   verl's reward loop assembles them;
3. advantages: verl's ``compute_advantage`` with the recipe's ``grpo_batch_scale`` estimator;
4. in a fresh process (the platform is chosen once per process): verl's ``ActorRolloutRefWorker`` (the engine-based
   worker the trainer runs as a Ray actor, here called in-process, world size 1, gloo) with ``actor.strategy=fsdp2``
   computes the old log-probs and runs ``update_actor``: policy loss, backward, optimizer step. The steps between
   mirror ``RayPPOTrainer._compute_old_log_prob`` and ``_update_actor``.

The model reacts to token positions (``build_position_sensitive_qwen``), so the engine's log-probs are compared
with a transformers forward that computes Qwen2.5-VL's M-RoPE itself (``mm_token_type_ids`` given; without it
transformers uses 1-D positions, which this model tells apart). A second batch has sequences of one length, the
layout verl 0.9.1 corrupts (``recipe.nested_mrope_fix``, delivered as in Ray workers through
``VERL_USE_EXTERNAL_MODULES``): with the fix its log-probs are right and ``update_actor`` runs; with verl's own
function restored, its log-probs are wrong.

verl has no CPU platform: ``recipe.cpu`` registers one (``VERL_PLATFORM=cpu``), and
``VERL_ENGINE_DEVICE=cuda`` picks the FSDP engine class registered for GPUs (verl's documented override of the
engine lookup). Attention is sdpa, remove-padding is off (verl's packed path needs flash-attention's varlen
kernels), dynamic batch size is off, and FSDP computes in fp32 instead of verl's default bf16 so that the engine's
log-probs can be compared tightly with a plain transformers forward pass. The process group (world size 1) is made
by the test: verl would ask torch for "cpu:gloo,cpu:gloo", which torch rejects. This is a test of the recipe's
pieces inside verl's update, not a supported way to train on CPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.fixtures.agent_loop import run_agent_loop
from tests.fixtures.stage_data import make_row, write_rows

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PROMPT_LENGTH = 64
RESPONSE_LENGTH = 64  # the planning gold answer is 57 tiny-tokenizer tokens
ROLLOUT_N = 2
JUNK = "asdf qwer <html>"
STAGES = ("planning", "torf")  # one planning and one VQA question
CHILD_TIMEOUT_S = 300
AGREEMENT = 1e-4  # nats; observed ~1e-6
POSITION_EFFECT = 0.05  # nats: the least that 1-D positions or the corrupted layout move this model's log-probs


def _trainer_config(model_dir: Path, data_file: Path) -> Any:
    """verl's composed ``ppo_trainer`` config, set for one small CPU update with the recipe's reward and estimator."""
    from hydra import compose, initialize_config_module

    overrides = [
        f"data.train_files=[{data_file}]",
        f"data.val_files=[{data_file}]",
        "data.shuffle=False",
        "data.custom_cls.path=pkg://recipe.dataset",
        "data.custom_cls.name=StagedRLHFDataset",
        f"actor_rollout_ref.model.path={model_dir}",
        "actor_rollout_ref.model.trust_remote_code=True",  # the stand-in video processor, in a fresh process
        "actor_rollout_ref.model.use_remove_padding=False",
        "actor_rollout_ref.model.enable_gradient_checkpointing=False",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        # fp32 compute (verl's default is bf16) so the engine's log-probs can be checked tightly against HF's
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.use_dynamic_bsz=False",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={len(STAGES)}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={len(STAGES) * ROLLOUT_N}",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        f"actor_rollout_ref.rollout.n={ROLLOUT_N}",
        f"actor_rollout_ref.rollout.prompt_length={PROMPT_LENGTH}",
        f"actor_rollout_ref.rollout.response_length={RESPONSE_LENGTH}",
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=False",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={len(STAGES) * ROLLOUT_N}",
        "algorithm.adv_estimator=grpo_batch_scale",
        "trainer.device=cpu",
        "reward.reward_manager.source=importlib",
        "reward.reward_manager.module.path=pkg://recipe.reward_manager",
        "reward.reward_manager.name=RewardMapRewardManager",
        "+reward.reward_kwargs.mode=released",
    ]
    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=overrides)


def _rollout_batch(tiny: tuple[Any, Any], config: Any, answers: list[tuple[int, str]]) -> Any:
    """One sample per (dataset item, answer) as verl's agent loop hands it to the trainer (a DataProto).

    ``answers`` pairs a dataset index with a response text (``GOLD`` for the item's gold answer); samples of the
    same item share a GRPO group.
    """
    from verl import DataProto
    from verl.trainer.ppo.utils import create_rl_dataset

    from reward_fns.gold import gold_response
    from reward_fns.ground_truth import GroundTruth

    tokenizer, _ = tiny
    data_config = config.data
    dataset = create_rl_dataset(data_config.val_files, data_config, tokenizer, tiny[1], is_train=False)
    assert len(dataset) == len(STAGES)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

    columns: dict[str, list[Any]] = {
        k: [] for k in ("prompts", "responses", "input_ids", "attention_mask", "position_ids", "response_mask")
    }
    non_tensor: dict[str, list[Any]] = {
        k: [] for k in ("uid", "data_source", "reward_model", "extra_info", "multi_modal_inputs")
    }
    for index, text in answers:
        sample = dataset[index]
        if text == GOLD:
            text = gold_response(GroundTruth.from_json(sample["reward_model"]["ground_truth"]))
        answer = tokenizer.encode(text, add_special_tokens=False)[: RESPONSE_LENGTH - 1] + [eos]
        run = run_agent_loop(
            sample, tiny, dataset, data_config, PROMPT_LENGTH, RESPONSE_LENGTH, answer_ids=answer, trainer_config=config
        )
        for key in columns:
            columns[key].append(getattr(run, key))
        non_tensor["uid"].append(f"prompt-{index}")
        non_tensor["data_source"].append(sample["data_source"])
        non_tensor["reward_model"].append(sample["reward_model"])
        non_tensor["extra_info"].append(sample["extra_info"])
        non_tensor["multi_modal_inputs"].append(run.multi_modal_inputs)

    tensors = {key: torch.cat(values, dim=0) for key, values in columns.items()}
    arrays = {key: np.array(values, dtype=object) for key, values in non_tensor.items()}
    return DataProto.from_dict(tensors=tensors, non_tensors=arrays, meta_info={"temperature": 1.0})


GOLD = "<gold>"
MIXED = [(0, GOLD), (0, JUNK), (1, GOLD), (1, JUNK)]  # 2 prompts x (gold, junk): different lengths
EQUAL = [(1, GOLD)] * 4  # one prompt, one answer: every sequence has the same length


def _add_rewards_and_advantages(batch: Any, config: Any) -> Any:
    """Rewards as verl's reward loop computes them (RewardLoopWorker in-process), then compute_advantage."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.trainer.ppo.ray_trainer import compute_advantage

    from recipe.advantage import register_estimator

    register_estimator()
    from recipe.reward_manager import RewardMapRewardManager

    worker = RewardLoopWorker(config)
    assert isinstance(worker.reward_manager, RewardMapRewardManager)
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(batch))
    scores = [o["reward_score"] for o in outputs]
    batch.batch["token_level_scores"] = RewardMapRewardManager.assemble_rm_scores(batch, scores)
    batch.batch["token_level_rewards"] = batch.batch["token_level_scores"]  # use_kl_in_reward=False
    return compute_advantage(batch, adv_estimator=config.algorithm.adv_estimator, num_repeat=ROLLOUT_N)


def engine_step(config_path: str, mixed_path: str, equal_path: str, out_path: str) -> None:
    """In a fresh CPU-platform process: old log-probs of both batches (the equal one also with verl's own position-id
    function), then ``update_actor`` on the equal batch and on the mixed one, through verl's worker."""
    from omegaconf import OmegaConf
    from torch.distributed.tensor import DTensor
    from verl import DataProto
    from verl.plugin.platform import get_platform
    from verl.workers.engine_workers import ActorRolloutRefWorker

    import recipe.nested_mrope_fix as fix

    assert get_platform().device_name == "cpu", "start this process with VERL_PLATFORM=cpu"
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)  # verl would ask for "cpu:gloo,cpu:gloo"
    try:
        config = OmegaConf.load(config_path)
        mixed, equal = DataProto.load_from_disk(mixed_path), DataProto.load_from_disk(equal_path)
        worker = ActorRolloutRefWorker(config=config.actor_rollout_ref, role="actor")
        worker.init_model()
        before = {name: p.detach().clone() for name, p in worker.actor.engine.module.named_parameters()}
        result: dict[str, Any] = {"fix_installed": fix.installed()}

        mixed, result["log_probs"] = _old_log_probs(worker, mixed)
        _use_position_id_function(fix.verl_maybe_fix_3d_position_ids)  # verl's own, as shipped
        try:
            result["equal_log_probs_unfixed"] = _old_log_probs(worker, equal, keep=False)[1]
        except RuntimeError as err:  # the corrupted layout may also fail outright
            result["equal_log_probs_unfixed"] = repr(err)
        _use_position_id_function(fix.maybe_fix_3d_position_ids)
        equal, result["equal_log_probs"] = _old_log_probs(worker, equal)

        equal_metrics = _update_actor(worker, equal, config)
        result["equal_metrics"] = {key: _as_floats(value) for key, value in equal_metrics.items()}
        metrics = _update_actor(worker, mixed, config)

        engine = worker.actor.engine
        after = dict(engine.module.named_parameters())
        result.update(
            engine=type(engine).__name__,
            strategy=engine.engine_config.strategy,
            sharded=all(isinstance(p, DTensor) for p in after.values()),  # fully_shard (FSDP2) parameters
            metrics={key: _as_floats(value) for key, value in metrics.items()},
            parameters=sorted(after),
            changed=[name for name, p in after.items() if not torch.equal(p.detach(), before[name])],
        )
        Path(out_path).write_text(json.dumps(result))
    finally:
        torch.distributed.destroy_process_group()


def _use_position_id_function(function: Any) -> None:
    import recipe.nested_mrope_fix as fix

    for name in fix.PATCHED_MODULES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "maybe_fix_3d_position_ids"):
            module.maybe_fix_3d_position_ids = function


def _old_log_probs(worker: Any, batch: Any, *, keep: bool = True) -> tuple[Any, list]:
    """``RayPPOTrainer._compute_old_log_prob``: the batch (with old log-probs and entropy when ``keep``; DataProto's
    union changes it in place) and the log-probs."""
    from verl import DataProto
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

    batch_td = left_right_2_no_padding(batch.to_tensordict())
    tu.assign_non_tensor(batch_td, calculate_entropy=True, calculate_sum_pi_squared=False, compute_loss=False)
    output = worker.compute_log_prob(batch_td)
    log_probs = no_padding_2_padding(tu.get(output, "log_probs"), batch_td).float()
    entropy = no_padding_2_padding(tu.get(output, "entropy"), batch_td).float()
    if keep:
        batch = batch.union(DataProto.from_single_dict({"old_log_probs": log_probs, "entropys": entropy}))
    return batch, log_probs.tolist()


def _update_actor(worker: Any, batch: Any, config: Any) -> dict:
    """``RayPPOTrainer._update_actor``: one mini-batch of the whole batch; returns the worker's metrics."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    actor = config.actor_rollout_ref.actor
    mini_batch_size = actor.ppo_mini_batch_size * config.actor_rollout_ref.rollout.n
    batch.meta_info.update(multi_turn=False, temperature=config.actor_rollout_ref.rollout.temperature)
    batch_td = left_right_2_no_padding(batch.to_tensordict())
    tu.assign_non_tensor(
        batch_td,
        calculate_entropy=actor.calculate_entropy or actor.entropy_coeff != 0.0,
        distillation_use_topk=False,
        distillation_only=False,
        global_batch_size=mini_batch_size,
        mini_batch_size=mini_batch_size,
        epochs=actor.ppo_epochs,
        seed=actor.data_loader_seed,
        dataloader_kwargs={"shuffle": actor.shuffle},
        compute_loss=True,
    )
    return tu.get(worker.update_actor(batch_td), "metrics")


def _as_floats(value: Any) -> list[float]:
    values = value if isinstance(value, list) else [value]
    return [float(v) for v in values]


def test_grpo_updates_through_verl_fsdp2_engine(sensitive_dir: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from recipe.nested_mrope_fix import EXTERNAL_MODULE
    from tests.fixtures.tiny_qwen import load_tiny_qwen

    tiny = load_tiny_qwen(sensitive_dir)
    rows = [make_row(stage, i) for i, stage in enumerate(STAGES)]  # 112 x 84 maps, inside the pixel budget
    config = _trainer_config(sensitive_dir, write_rows(tmp_path / "rows.parquet", rows))
    mixed = _add_rewards_and_advantages(_rollout_batch(tiny, config, MIXED), config)
    equal = _add_rewards_and_advantages(_rollout_batch(tiny, config, EQUAL), config)

    # the recipe's pieces: gold beats junk for each prompt, so advantages are non-zero and of opposite sign
    scores = mixed.batch["token_level_rewards"].sum(-1)
    advantages = mixed.batch["advantages"][:, 0]
    assert len(mixed) == len(STAGES) * ROLLOUT_N
    for gold, junk in ((0, 1), (2, 3)):
        assert scores[gold] > scores[junk]
        assert advantages[gold] > 0 > advantages[junk]
    assert torch.isfinite(mixed.batch["advantages"]).all()
    lengths = equal.batch["attention_mask"].sum(-1)
    assert bool((lengths == lengths[0]).all()), "the equal batch must hold sequences of one length"

    paths = {name: tmp_path / name for name in ("config.yaml", "mixed.pkl", "equal.pkl", "out.json")}
    OmegaConf.save(config, paths["config.yaml"])
    mixed.save_to_disk(str(paths["mixed.pkl"]))
    equal.save_to_disk(str(paths["equal.pkl"]))
    env = {
        **os.environ,
        "VERL_PLATFORM": "cpu",
        "VERL_USE_EXTERNAL_MODULES": f"{EXTERNAL_MODULE},recipe.cpu",  # as the Ray workers get them
        "VERL_ENGINE_DEVICE": "cuda",  # the FSDP engine class is registered for cuda/npu only
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "CUDA_VISIBLE_DEVICES": "",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    arguments = ", ".join(repr(str(paths[n])) for n in ("config.yaml", "mixed.pkl", "equal.pkl", "out.json"))
    code = f"from tests.test_grpo_update_cpu import engine_step; engine_step({arguments})"
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
    )
    assert done.returncode == 0, f"engine step failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    result = json.loads(paths["out.json"].read_text())
    print(f"engine step: {time.monotonic() - start:.1f} s, {json.dumps(result['metrics'], sort_keys=True)}")

    assert result["engine"] == "FSDPEngineWithLMHead" and result["strategy"] == "fsdp2" and result["sharded"]
    assert result["fix_installed"], "the engine modules must use recipe.nested_mrope_fix"
    # old log-probs: those of the same model run by plain transformers computing M-RoPE (images included)
    for batch, key in ((mixed, "log_probs"), (equal, "equal_log_probs")):
        log_probs, mask = torch.tensor(result[key]), batch.batch["response_mask"].bool()
        assert log_probs.shape == mask.shape and torch.isfinite(log_probs[mask]).all()
        mrope = _hf_log_probs(sensitive_dir, batch, mrope=True)
        one_d = _hf_log_probs(sensitive_dir, batch, mrope=False)  # the old check's reference
        agreement, position_effect = (log_probs - mrope)[mask].abs().max(), (one_d - mrope)[mask].abs().max()
        print(f"{key}: engine vs M-RoPE forward {agreement:.2e}, 1-D vs M-RoPE forward {position_effect:.3f}")
        assert agreement < AGREEMENT, key
        assert position_effect > POSITION_EFFECT, "the model must react to positions"
    # verl's own function on the equal batch: wrong log-probs (or a failure); when this fails, verl fixed the bug
    unfixed, mask = result["equal_log_probs_unfixed"], equal.batch["response_mask"].bool()
    if not isinstance(unfixed, str):
        wrong = (torch.tensor(unfixed) - _hf_log_probs(sensitive_dir, equal, mrope=True))[mask].abs().max()
        print(f"equal batch with verl's own position-id function: {wrong:.3f} from the M-RoPE forward")
        assert wrong > POSITION_EFFECT, f"verl's own function gave right log-probs ({wrong}): drop the workaround"
    # update_actor ran on the equal batch (verl alone crashes in split_with_sizes there)
    assert all(math.isfinite(v) for values in result["equal_metrics"].values() for v in values)

    metrics = result["metrics"]
    for key in ("actor/pg_loss", "grad_norm"):
        assert key in metrics, sorted(metrics)
        assert metrics[key] and all(math.isfinite(v) for v in metrics[key]), (key, metrics[key])
    assert any(v > 0 for v in metrics["grad_norm"])
    changed = set(result["changed"])
    assert changed, "the optimizer step changed no parameter"
    # the images reached the model: the vision tower was trained too
    assert any(".visual." in name or name.startswith("visual.") for name in changed), sorted(changed)
    assert any("language_model" in name for name in changed), sorted(changed)


def _hf_log_probs(model_dir: Path, batch: Any, *, mrope: bool) -> torch.Tensor:
    """Response-token log-probs of the model before any update, by transformers on the padded batch.

    ``mrope``: pass ``mm_token_type_ids`` so transformers computes Qwen2.5-VL's M-RoPE positions itself; without
    it, transformers 5.x silently uses 1-D positions.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    mm = list(batch.non_tensor_batch["multi_modal_inputs"])
    ids, responses = batch.batch["input_ids"], batch.batch["responses"]
    extra = {"mm_token_type_ids": (ids == model.config.image_token_id).long()} if mrope else {}
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            attention_mask=batch.batch["attention_mask"],
            pixel_values=torch.cat([m["pixel_values"] for m in mm]),
            image_grid_thw=torch.cat([m["image_grid_thw"] for m in mm]),
            **extra,
        ).logits.float()
    logits = logits[:, -responses.shape[1] - 1 : -1]
    return torch.log_softmax(logits, dim=-1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
