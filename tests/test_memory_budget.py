"""The pre-flight's GPU memory arithmetic (recipe/memory_budget.py): what does not fit fails with its numbers, the
presets fit the GPUs they state, and the LoRA parameter count is PEFT's own."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from recipe.memory_budget import KNOWN_CONFIGS, RunShape, estimate_memory, model_shape
from recipe.preflight import PreflightReport, Status, _check_gpu_memory
from tests.fixtures.configs import compose_config

SEVEN, THREE = "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct"
VISION = ".*visual.*"  # configs/adapter/lora.yaml


def shape(name: str, lora_rank: int = 0):
    return model_shape(
        AutoConfig.for_model("qwen2_5_vl", **KNOWN_CONFIGS[name]), lora_rank=lora_rank, exclude_modules=VISION
    )


def run(gpus: int, tensor_parallel: int = 1, *, lora: bool = False, **changes) -> RunShape:
    settings = dict(
        gpus=gpus,
        gpu_gib=79.0,
        tensor_parallel=tensor_parallel,
        gpu_memory_utilization=0.6,
        sequence_tokens=20000 + 2048,
        image_tokens=16384,
        micro_batch=1,
        max_num_batched_tokens=24576,
        lora=lora,
    )
    return RunShape(**{**settings, **changes})


def test_the_presets_models_have_their_published_sizes() -> None:
    assert round(shape(SEVEN).params / 1e9, 2) == 8.29 and round(shape(THREE).params / 1e9, 2) == 3.75
    assert 0.66e9 < shape(SEVEN).vision_params < 0.68e9  # the 675M vision tower and merger


def test_a_7b_full_fine_tune_on_one_80gb_gpu_fails_with_its_numbers() -> None:
    estimate = estimate_memory(shape(SEVEN), run(1))
    (problem,) = estimate.problems()
    assert problem.startswith("the actor update needs")
    assert "weights (fp32) 30.9, gradients 30.9, optimizer (AdamW) 61.8" in problem  # 8.29e9 x 4, 4, 8 bytes
    assert estimate.update_gib > 79


@pytest.mark.parametrize(
    ("name", "gpus", "tensor_parallel", "lora"),
    [(SEVEN, 8, 4, False), (THREE, 8, 2, False), (THREE, 1, 1, True), (SEVEN, 2, 1, True)],
    ids=["7b-full-8gpu", "3b-full-8gpu", "3b-lora-1gpu", "7b-lora-2gpu"],
)
def test_the_presets_fit_the_gpus_they_state(name: str, gpus: int, tensor_parallel: int, lora: bool) -> None:
    estimate = estimate_memory(shape(name, 64 if lora else 0), run(gpus, tensor_parallel, lora=lora))
    assert estimate.problems() == [], estimate.problems()
    assert estimate.sequences_in_kv_cache >= 16  # room for many full-length rollouts, not just one


def test_what_breaks_each_phase_is_named() -> None:
    three = shape(THREE, 64)
    kept = estimate_memory(three, run(1, lora=True, param_offload=False, gpu_memory_utilization=0.9))
    assert any(p.startswith("generation needs") and "actor weights kept 14.0" in p for p in kept.problems())
    starved = estimate_memory(three, run(1, lora=True, gpu_memory_utilization=0.1))
    assert any(p.startswith("vLLM's share leaves") for p in starved.problems()), starved.problems()
    assert estimate_memory(three, run(2, 4)).problems()[0] == (
        "tensor_model_parallel_size=4 does not divide the run's 2 GPUs"
    )


def test_lora_parameters_are_counted_as_peft_counts_them(tiny_dir) -> None:
    """The meta-device count equals PEFT's own trainable count on the tiny Qwen2.5-VL, with verl's LoraConfig."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForImageTextToText

    hf_config = AutoConfig.from_pretrained(tiny_dir)
    counted = model_shape(hf_config, lora_rank=4, target_modules="all-linear", exclude_modules=VISION)
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir, dtype=torch.float32)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8, target_modules="all-linear", exclude_modules=VISION
        ),
    )
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert counted.trainable_params == trainable > 0
    assert counted.params == total - trainable
    assert not any(p.requires_grad for name, p in peft_model.named_parameters() if "visual" in name)


def test_the_preflight_checks_the_gpus_the_run_gets() -> None:
    def check(*overrides: str):
        report = PreflightReport()
        _check_gpu_memory(compose_config(*overrides), [], report)
        (result,) = report.checks
        return result

    full_on_one = check(
        "preset=qwen2_5_vl_7b", "trainer.n_gpus_per_node=1", "actor_rollout_ref.rollout.tensor_model_parallel_size=1"
    )
    assert full_on_one.status is Status.FAIL and "the actor update needs" in full_on_one.detail
    for preset, gpus in (("qwen2_5_vl_3b", 1), ("qwen2_5_vl_7b", 2)):
        lora = check(f"preset={preset}", "adapter=lora")
        assert lora.status is Status.OK, lora.detail
        assert "LoRA rank 64" in lora.detail and f"; {gpus} GPU" in lora.detail
    assert check("dry_run=cpu").status is Status.SKIPPED
