"""LoRA through the whole loop on CPU (adapter=lora): verl's own LoRA path trains adapters on the tiny Qwen2.5-VL, the
adapters reach the rollout every step, a second process resumes the checkpoint, and the merged model evaluates.

Process 1 trains step 1 of the coarse curriculum's two, process 2 resumes and trains step 2; then ``python -m
recipe.evaluate generate`` and ``score`` run on the last checkpoint. Read back from the run's files: the adapters
changed and the base (vision tower included) did not, exactly; the rollout server got the base once per process and
then, every step, exactly the adapter tensors the checkpoint holds, and generated with log-probs that agree with the
actor's although the adapter moves them by far more; the resumed server holds the checkpoint's adapter; the merged
model is the base plus the adapter. The LoRA learning rate is raised so that one step visibly moves the policy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from recipe.cpu.run_summary import read_steps, run_files, training_entries
from tests.test_training_loop_cpu import PROBS_DIFF_LIMIT, ROOT, evaluate_checkpoint, main_job, sync_log

pytestmark = pytest.mark.slow

LORA = (
    "adapter=lora",
    "curriculum=coarse",  # two stages: one step each
    "actor_rollout_ref.model.lora_rank=8",
    "actor_rollout_ref.model.lora_alpha=16",
    "actor_rollout_ref.actor.optim.lr=4e-3",
    "actor_rollout_ref.rollout.name=transformers",  # the recipe's server merges the adapter (vLLM LoRA: see README)
)


def checkpoint_state(step_dir: Path) -> dict:
    """The actor's saved state (PEFT names), as plain tensors."""
    import torch

    state = torch.load(step_dir / "actor" / "model_world_size_1_rank_0.pt", map_location="cpu", weights_only=False)
    return {name: t.to_local() if hasattr(t, "to_local") else t for name, t in state.items()}


def adapter_of(state: dict) -> dict:
    """The LoRA tensors under the names verl sends them to the rollout (PEFT's state dict: no adapter name)."""
    return {name.replace(".default.", "."): t for name, t in state.items() if ".lora_" in name}


def log_probs(model, ids) -> object:
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits.log_softmax(-1)


def test_lora_trains_syncs_resumes_and_evaluates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_tiny_models: str
) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    import tests.test_training_loop_cpu as loop_test
    from recipe.cpu.rollout import merge_lora, state_digest

    # a process builds the data and the tiny model first: on a shared 2-core machine under load that alone took
    # minutes, past the whole-loop test's 420 s
    monkeypatch.setattr(loop_test, "PROCESS_TIMEOUT_S", max(loop_test.PROCESS_TIMEOUT_S, 900))

    first = main_job(tmp_path, *LORA, shared_tiny_models, "trainer.total_training_steps=1")
    second = main_job(tmp_path, *LORA, shared_tiny_models)
    [run_dir] = list((tmp_path / "cpu_dry_run").iterdir())
    assert run_dir.name == "cpu_dry_run-coarse_curriculum-fixed_reward-lora"
    checkpoints = run_dir / "checkpoints"
    assert "dry run: 1 steps" in first.stdout
    assert f"resuming the dry run from {checkpoints / 'global_step_1'}: steps 2-2 of 2" in second.stdout
    logged = {step: data for step, (_, data) in training_entries(run_files(run_dir)).items()}
    assert sorted(logged) == [1, 2] == sorted(read_steps(run_files(run_dir)))
    assert all(d["actor/grad_norm"] > 0 for d in logged.values())

    # the adapters trained; the base, vision tower included, is the tiny model's, bit for bit
    one, two = checkpoint_state(checkpoints / "global_step_1"), checkpoint_state(checkpoints / "global_step_2")
    adapter_1, adapter_2 = adapter_of(one), adapter_of(two)
    assert adapter_1 and not any("visual" in name for name in adapter_2)
    assert all(not torch.equal(adapter_1[k], adapter_2[k]) for k in adapter_2 if ".lora_B." in k)
    models = Path(shared_tiny_models.partition("=")[2])
    [tiny_model] = [config.parent for config in models.glob("*/config.json") if config.parent.name in second.stdout]
    base_model = AutoModelForImageTextToText.from_pretrained(tiny_model, dtype=torch.float32, trust_remote_code=True)
    base = base_model.state_dict()
    frozen = {
        name.removeprefix("base_model.model.").replace(".base_layer.", "."): t
        for name, t in two.items()
        if ".lora_" not in name
    }
    assert frozen.keys() == base.keys() and all(torch.equal(frozen[k], base[k]) for k in base)

    # weight sync: per process the base once, then every step exactly the checkpoint's adapter
    records = sync_log(run_dir)
    syncs = [s for s in records if s["side"] == "rollout"]
    sent = [s for s in records if s["side"] == "actor"]
    assert [(s["kind"], s["global_steps"]) for s in sent] == [(s["kind"], s["global_steps"]) for s in syncs]
    assert [(s["kind"], s["global_steps"]) for s in syncs] == [
        ("lora base", 0),
        ("lora adapter", 0),
        ("lora adapter", 1),
        ("lora base", 1),  # process 2: its new rollout server
        ("lora adapter", 1),  # ... gets the resumed checkpoint's adapter
        ("lora adapter", 2),
    ]
    assert syncs[0]["digest"] == syncs[3]["digest"] == state_digest(base.items())
    assert syncs[2]["adapter_digest"] == syncs[4]["adapter_digest"] == state_digest(adapter_1.items())
    assert syncs[5]["adapter_digest"] == state_digest(adapter_2.items())
    assert syncs[2]["digest"] == syncs[4]["digest"], "the resumed server serves other weights than process 1's"

    # the rollout generated with the adapted policy: its log-probs agree with the actor's, although the adapter
    # moves them by far more than the agreement limit
    diffs = {s: d["training/rollout_probs_diff_max"] for s, d in logged.items()}
    assert all(d < PROBS_DIFF_LIMIT for d in diffs.values()), diffs
    peft_config = json.loads((checkpoints / "global_step_2" / "actor" / "lora_train_meta.json").read_text())
    merged = merge_lora({k: base[k] for k in base}, adapter_2, peft_config)
    adapted = AutoModelForImageTextToText.from_pretrained(tiny_model, dtype=torch.float32, trust_remote_code=True)
    adapted.load_state_dict({**base, **merged})
    ids = torch.arange(100, 164).unsqueeze(0)
    moved = (log_probs(adapted, ids) - log_probs(base_model, ids)).abs().max().item()
    assert moved > 100 * PROBS_DIFF_LIMIT, moved

    # the merged model evaluates: verl's merger plus the adapter folded in (recipe/evaluate/models.py)
    [data_dir] = [d for d in tmp_path.glob("synthetic-*") if (d / "test.parquet").is_file()]
    step_dir, env = checkpoints / "global_step_2", {**os.environ, "PYTHONPATH": str(ROOT)}
    results = evaluate_checkpoint(step_dir, data_dir / "test.parquet", tmp_path, limit=2, max_new_tokens=16, env=env)
    merged_dir = step_dir / "actor" / "huggingface_merged"
    assert (merged_dir / "lora_adapter" / "adapter_config.json").is_file()
    evaluated = AutoModelForImageTextToText.from_pretrained(merged_dir, dtype=torch.float32, trust_remote_code=True)
    served = evaluated.state_dict()
    for name, weight in merged.items():  # the adapted weights (saved in bf16 by verl's merger)
        assert torch.allclose(served[name], weight, atol=1e-2), name
        assert not torch.allclose(served[name], base[name], atol=1e-4), f"{name}: the base, not the trained model"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["inputs"]["responses"][0]["model"] == str(step_dir)
