"""verl 0.9.1's agent loop computes Qwen2.5-VL's M-RoPE position ids exactly as transformers does.

The question this settles: an earlier check found the agent loop's position ids changing transformers' log-probs
by up to 3 nats, which on a GPU would bias every importance ratio against vLLM's log-probs. The check was wrong:
in transformers 5.x a forward without ``position_ids`` computes M-RoPE only when ``mm_token_type_ids`` is given,
and falls back to 1-D positions otherwise; verl's agent loop removes ``mm_token_type_ids`` from the multi-modal
inputs it stores, so a reference forward built from them runs with 1-D positions. Pinned here:

1. the agent loop's rows 1-3 equal ``get_rope_index`` (given ``mm_token_type_ids``) at every valid token, and row 0
   counts valid tokens;
2. on a position-sensitive model, a forward with verl's ids equals the M-RoPE forward, while the forward without
   ``mm_token_type_ids`` (the old check's reference) is far from both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.fixtures.agent_loop import run_agent_loop
from tests.fixtures.configs import compose_config
from tests.fixtures.stage_data import make_row, write_rows

PROMPT_LENGTH, RESPONSE_LENGTH = 192, 64
SHAPES = [(112, 84), (84, 196), (308, 56), (140, 140)]  # wide, tall and square maps; all inside their pixel budget
POSITION_EFFECT = 0.05  # nats: how far 1-D positions move this model's log-probs at least (observed ~0.3)


@pytest.fixture(scope="module")
def samples(sensitive_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """Each shape's map and question through verl's agent loop, answered with the gold answer (or junk)."""
    from verl.trainer.ppo.utils import create_rl_dataset

    from reward_fns.gold import gold_response
    from reward_fns.ground_truth import GroundTruth
    from tests.fixtures.stage_data import MAX_PIXELS
    from tests.fixtures.tiny_qwen import load_tiny_qwen

    tiny = load_tiny_qwen(sensitive_dir)
    tokenizer, _ = tiny
    rows = []
    for i, size in enumerate(SHAPES):
        row = make_row("planning" if i % 2 else "torf", i, size=size)
        row["images"][0]["max_pixels"] = max(MAX_PIXELS, size[0] * size[1])
        rows.append(row)
    file = write_rows(tmp_path_factory.mktemp("rows") / "rows.parquet", rows)
    config = compose_config(f"data.val_files=[{file}]", "data.stages=[]", data_dir=str(file.parent)).data
    dataset = create_rl_dataset([str(file)], config, tokenizer, tiny[1], is_train=False)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    runs = []
    for i in range(len(dataset)):
        item = dataset[i]
        answer = gold_response(GroundTruth.from_json(item["reward_model"]["ground_truth"]))
        ids = tokenizer.encode(answer, add_special_tokens=False)[: RESPONSE_LENGTH - 1] + [end]
        runs.append(run_agent_loop(item, tiny, dataset, config, PROMPT_LENGTH, RESPONSE_LENGTH, answer_ids=ids))
    return runs


def model_and_image_token(model_dir: Path) -> tuple[Any, int]:
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    return model, int(model.config.image_token_id)


def test_agent_loop_position_ids_equal_transformers_get_rope_index(samples: list[Any], sensitive_dir: Path) -> None:
    model, image_token = model_and_image_token(sensitive_dir)
    for run in samples:
        ids, mask = run.input_ids, run.attention_mask
        assert mask[0, 0] == 0 and mask[0, -1] == 0, "left-padded prompt, right-padded response"
        reference, _ = model.model.get_rope_index(
            ids,
            image_grid_thw=run.multi_modal_inputs["image_grid_thw"],
            attention_mask=mask,
            mm_token_type_ids=(ids == image_token).long(),
        )  # (3, 1, L)
        verl = run.position_ids[0]  # (4, L): text row, then t, h, w
        valid = mask[0].bool()
        assert torch.equal(verl[1:, valid], reference[:, 0, valid])
        assert torch.equal(verl[0, valid], torch.arange(int(valid.sum())))
        assert not torch.equal(verl[1, valid], verl[0, valid]), "an image prompt's M-RoPE rows are not 1-D positions"


def response_log_probs(model: Any, runs: list[Any], **inputs: Any) -> torch.Tensor:
    """Log-probs of each run's response tokens under a plain transformers forward of the padded batch."""
    ids = torch.cat([r.input_ids for r in runs])
    responses = torch.cat([r.responses for r in runs])
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            attention_mask=torch.cat([r.attention_mask for r in runs]),
            pixel_values=torch.cat([r.multi_modal_inputs["pixel_values"] for r in runs]),
            image_grid_thw=torch.cat([r.multi_modal_inputs["image_grid_thw"] for r in runs]),
            **inputs,
        ).logits
    model.model.rope_deltas = None
    logits = logits[:, -responses.shape[1] - 1 : -1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)


def test_verl_position_ids_give_transformers_own_mrope_log_probs(samples: list[Any], sensitive_dir: Path) -> None:
    model, image_token = model_and_image_token(sensitive_dir)
    ids = torch.cat([r.input_ids for r in samples])
    mask = torch.cat([r.response_mask for r in samples]).bool()
    mrope = response_log_probs(model, samples, mm_token_type_ids=(ids == image_token).long())
    verl = response_log_probs(model, samples, position_ids=torch.cat([r.position_ids for r in samples]).transpose(0, 1))
    one_d = response_log_probs(model, samples)  # the old check's reference: no position ids, no token types
    assert (verl - mrope)[mask].abs().max() < 1e-5
    assert (one_d - mrope)[mask].abs().max() > POSITION_EFFECT, "the model must react to positions for this to test"
