"""The ``transformers`` rollout backend (recipe.cpu.rollout), driven in-process the way verl's agent loop calls it.

The server must: never sample a vision token (a response holding ``<|image_pad|>`` breaks the agent loop's
M-RoPE computation), report the model's own log-probs under Qwen2.5-VL's M-RoPE positions (what verl's actor
computes, so ``training/rollout_probs_diff_*`` measures engine agreement), and load the actor's weights only when
their digest checks out.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch

from recipe.cpu.rollout import TransformersRolloutServer
from recipe.cpu.weight_sync import state_digest
from recipe.row_images import chat_messages, row_images
from tests.fixtures.stage_data import make_row

RESPONSE_LENGTH = 24
VISION_BOOST = 40.0  # added to the vision tokens' logits: a model that wants to sample them


def server_for(model_dir: Path) -> TransformersRolloutServer:
    import recipe.tiny_model  # noqa: F401  (registers the tiny processor's stand-in video processor here)

    return TransformersRolloutServer(str(model_dir), trust_remote_code=False, response_length=RESPONSE_LENGTH, seed=0)


def prompt_of(server: TransformersRolloutServer, model_dir: Path) -> tuple[list[int], list[Any]]:
    """A map question's prompt ids and images as verl's agent loop sends them to a server."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    row = make_row("planning", 0, size=(140, 112))
    images = row_images(row)
    text = processor.apply_chat_template(chat_messages(row), add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=images, return_tensors="pt")["input_ids"][0].tolist(), images


def generate(server: TransformersRolloutServer, prompt: list[int], images: list[Any], **sampling: Any) -> Any:
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True, **sampling}
    return asyncio.run(server.generate("request", prompt_ids=prompt, sampling_params=params, image_data=images))


@pytest.fixture()
def boosted_vision(tiny_dir: Path):
    """A server whose model puts VISION_BOOST extra logits on every vision token."""
    server = server_for(tiny_dir)
    boost = torch.zeros(server.model.config.text_config.vocab_size)
    boost[server.vision_token_ids] = VISION_BOOST
    handle = server.model.lm_head.register_forward_hook(lambda module, args, out: out + boost)
    yield server
    handle.remove()


def test_vision_tokens_are_never_sampled(boosted_vision: TransformersRolloutServer, tiny_dir: Path) -> None:
    server = boosted_vision
    prompt, images = prompt_of(server, tiny_dir)
    vision = set(server.vision_token_ids)
    assert {"<|image_pad|>", "<|vision_start|>"} <= {server_tokenizer_token(tiny_dir, i) for i in vision}
    for _ in range(3):
        output = generate(server, prompt, images)
        assert output.token_ids and not vision & set(output.token_ids)
    # without the mask this model samples them: the test can see a missing mask
    inputs = {
        "input_ids": torch.tensor([prompt]),
        "pixel_values": server.image_processor(images=images, return_tensors="pt")["pixel_values"],
        "image_grid_thw": server.image_processor(images=images, return_tensors="pt")["image_grid_thw"],
    }
    unmasked = server.model.generate(**inputs, do_sample=True, max_new_tokens=8, pad_token_id=server.pad_token_id)
    server.model.model.rope_deltas = None
    assert vision & set(unmasked[0, len(prompt) :].tolist())


def server_tokenizer_token(model_dir: Path, token_id: int) -> str:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir).convert_ids_to_tokens(token_id)


def teacher_forced(server: TransformersRolloutServer, prompt: list[int], images: list[Any], tokens: list[int], **kw):
    """Log-probs of ``tokens`` after ``prompt`` from one plain forward of the server's model."""
    ids = torch.tensor([prompt + tokens])
    pixels = server.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        logits = server.model(
            input_ids=ids, pixel_values=pixels["pixel_values"], image_grid_thw=pixels["image_grid_thw"], **kw
        ).logits[0, len(prompt) - 1 : -1]
    server.model.model.rope_deltas = None
    return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(tokens).unsqueeze(-1)).squeeze(-1)


def test_reported_log_probs_are_the_models_under_mrope(sensitive_dir: Path) -> None:
    server = server_for(sensitive_dir)
    prompt, images = prompt_of(server, sensitive_dir)
    output = generate(server, prompt, images)
    reported = torch.tensor(output.log_probs)
    assert len(output.log_probs) == len(output.token_ids) > 0
    ids = torch.tensor([prompt + output.token_ids])
    mrope = teacher_forced(server, prompt, images, output.token_ids, mm_token_type_ids=(ids == server.image_token_id))
    one_d = teacher_forced(server, prompt, images, output.token_ids)
    assert (reported - mrope).abs().max() < 1e-4
    assert (one_d - mrope).abs().max() > 1e-2, "this model reacts to positions: 1-D RoPE would be visible"
    assert output.extra_fields["global_steps"] is None and output.stop_reason == "completed"


def test_greedy_requests_are_deterministic(tiny_dir: Path) -> None:
    server = server_for(tiny_dir)
    prompt, images = prompt_of(server, tiny_dir)
    first, second = (generate(server, prompt, images, temperature=0.0) for _ in range(2))
    assert first.token_ids == second.token_ids


def test_weights_load_only_with_a_matching_digest(tiny_dir: Path) -> None:
    server = server_for(tiny_dir)
    prompt, images = prompt_of(server, tiny_dir)
    before = generate(server, prompt, images, temperature=0.0)
    state = {name: tensor + 0.05 for name, tensor in server.model.state_dict().items()}
    sent = state_digest(state.items())
    with pytest.raises(RuntimeError, match="differ from the actor's"):
        server.load_weights(state, 3, "0" * 64)
    assert server.load_weights(state, 3, sent) == sent == server.weight_digest()
    assert generate(server, prompt, images, temperature=0.0).extra_fields["global_steps"] == 3
    after = teacher_forced(server, prompt, images, before.token_ids)
    assert not torch.allclose(after, torch.tensor(before.log_probs)), "generation uses the loaded weights"
    with pytest.raises(KeyError, match="missing"):
        server.load_weights(dict(list(state.items())[1:]), 4, sent)


def test_backend_is_registered_in_verls_tables() -> None:
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class

    from recipe.cpu.rollout import ROLLOUT_NAME, TransformersReplica, TransformersServerAdapter

    assert get_rollout_class(ROLLOUT_NAME, "async") is TransformersServerAdapter
    assert get_rollout_replica_class(ROLLOUT_NAME) is TransformersReplica
