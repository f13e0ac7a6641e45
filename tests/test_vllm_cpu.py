"""The CPU subclasses of verl's vLLM rollout (recipe/cpu/vllm_rollout.py, recipe/cpu/vllm_worker.py), one by one.

Each workaround is shown against the upstream behaviour that needs it (so a fix upstream makes a test here fail and
the workaround can go) and shown to work. The whole loop through them runs in tests/test_training_loop_cpu.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from recipe.config_resolvers import cpu_rollout_engine

ROOT = Path(__file__).resolve().parents[1]

if cpu_rollout_engine()[0] != "vllm":
    pytest.skip(f"vLLM's CPU build cannot run here: {cpu_rollout_engine()[1]}", allow_module_level=True)


# --- the weight-sync read-back (vllm_worker.check_model_holds) ------------------------------------------------------


class _StackedModel(torch.nn.Module):
    """vLLM's layout in miniature: prefixed names, q/k/v stacked into qkv_proj, a padded vocabulary, a tied head."""

    hf_to_vllm_mapper = None  # set per instance below
    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"]}

    def __init__(self) -> None:
        from vllm.model_executor.models.utils import WeightsMapper

        super().__init__()
        self.hf_to_vllm_mapper = WeightsMapper(orig_to_new_prefix={"model.": "lm.model.", "lm_head.": "lm.lm_head."})
        self.lm = torch.nn.Module()
        self.lm.model = torch.nn.Module()
        self.lm.model.embed_tokens = torch.nn.Embedding(8, 2)  # vocabulary 5, padded to 8
        self.lm.model.qkv_proj = torch.nn.Linear(2, 6, bias=False)
        self.lm.lm_head = self.lm.model.embed_tokens  # tied


def _sent(model: _StackedModel) -> dict[str, torch.Tensor]:
    """HF-named tensors matching ``model`` (what verl's actor sends)."""
    embed = model.lm.model.embed_tokens.weight.data[:5].clone()
    q, k, v = model.lm.model.qkv_proj.weight.data.clone().split(2)
    return {
        "model.embed_tokens.weight": embed,
        "model.q_proj.weight": q,
        "model.k_proj.weight": k,
        "model.v_proj.weight": v,
        "lm_head.weight": embed.clone(),
    }


def test_read_back_accepts_the_sent_weights_in_vllms_layout() -> None:
    from recipe.cpu.vllm_worker import check_model_holds

    model = _StackedModel()
    assert check_model_holds(model, _sent(model)) == 3  # embed, qkv (stacked), lm_head (tied, its own name)


@pytest.mark.parametrize(
    "change",
    ["one value of a stacked part", "the tied head alone", "a tensor vLLM does not hold", "a missing tensor"],
)
def test_read_back_refuses_weights_that_differ(change: str) -> None:
    from recipe.cpu.vllm_worker import check_model_holds

    model = _StackedModel()
    sent = _sent(model)
    if change == "one value of a stacked part":
        sent["model.k_proj.weight"][0, 0] += 1e-6
    elif change == "the tied head alone":
        sent["lm_head.weight"][1, 1] += 1.0
    elif change == "a tensor vLLM does not hold":
        sent["model.extra.weight"] = torch.zeros(1)
    else:
        del sent["model.v_proj.weight"]
    with pytest.raises(RuntimeError, match="differ from the actor's after the sync"):
        check_model_holds(model, sent)


# --- limit_mm_per_prompt (vllm_async_server.py:290) ------------------------------------------------------------------


def test_server_restores_video_zero_that_verl_drops() -> None:
    from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer

    from recipe.cpu.vllm_rollout import CPUvLLMHttpServer

    config = SimpleNamespace(checkpoint_engine=None)
    verl_server, cpu_server = object.__new__(vLLMHttpServer), object.__new__(CPUvLLMHttpServer)  # no engine started
    verl_server.config = cpu_server.config = config
    verl_kwargs = {"limit_mm_per_prompt": {"image": 1}}  # what verl's launch_server builds from limit_images
    verl_server._preprocess_engine_kwargs(verl_kwargs)
    assert verl_kwargs["limit_mm_per_prompt"] == {"image": 1}, "verl keeps video out: the workaround may go"
    cpu_kwargs = {"limit_mm_per_prompt": {"image": 1}}
    cpu_server._preprocess_engine_kwargs(cpu_kwargs)
    assert cpu_kwargs["limit_mm_per_prompt"] == {"video": 0, "image": 1}
    assert cpu_server._get_worker_extension_cls() == "recipe.cpu.vllm_worker.CPUColocateWorkerExtension"


# --- vLLM's CPU linear layers drop their weight (linear.py:215 -> utils.py:305) ---------------------------------------

RELOAD_SCRIPT = """
import json, socket, sys, torch
from vllm.config import VllmConfig, set_current_vllm_config
from vllm.distributed import init_distributed_environment, initialize_model_parallel
from vllm.model_executor.layers.linear import ReplicatedLinear
if sys.argv[1] == "kept":
    from recipe.cpu.vllm_worker import keep_cpu_linear_weights
    keep_cpu_linear_weights()
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
with set_current_vllm_config(VllmConfig()):
    init_distributed_environment(1, 0, f"tcp://127.0.0.1:{port}", 0, "gloo")
    initialize_model_parallel(1, 1)
    layer = ReplicatedLinear(8, 4, bias=False, params_dtype=torch.float32)
x = torch.randn(3, 8)
result = {}
for step in ("load", "reload"):  # vLLM's start-up load, then verl's weight sync after an update
    weight = torch.randn(4, 8)
    try:
        layer.weight.weight_loader(layer.weight, weight)
    except Exception as error:
        result[step] = f"{type(error).__name__}: {error}"[:200]
        break
    layer.quant_method.process_weights_after_loading(layer)  # packs for oneDNN (verl calls it after a sync)
    result[step] = bool(torch.allclose(layer(x)[0], x @ weight.T, atol=1e-5))
result["weight_shape"] = list(layer.weight.shape)
print(json.dumps(result))
"""


def _reload(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, mode],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "VLLM_LOGGING_LEVEL": "ERROR"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_vllm_cpu_linear_layer_reloads_weights_only_when_kept() -> None:
    dropped = _reload("vllm")
    assert dropped["load"] is True and dropped["weight_shape"] == [0], "vLLM keeps its weights: the patch may go"
    assert "reload" in dropped and dropped["reload"] is not True, dropped  # verl's sync cannot load into it
    kept = _reload("kept")
    assert kept == {"load": True, "reload": True, "weight_shape": [4, 8]}, kept


# --- no accelerator id for a CPU worker (vllm_async_server.py:1348) ---------------------------------------------------


@pytest.mark.slow
def test_ray_gives_a_cpu_worker_no_accelerator_id_but_a_node_id() -> None:
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote(num_cpus=1)
        def ids() -> tuple[dict, str]:
            context = ray.get_runtime_context()
            return context.get_accelerator_ids(), context.get_node_id()

        accelerators, node = ray.get(ids.remote())
    finally:
        ray.shutdown()
    assert "CPU" not in accelerators, "Ray names CPU ids now: verl's lookup would work, the override may go"
    assert node  # what CPUvLLMReplica.launch_servers places its server by
