"""The ``transformers`` rollout backend (recipe.cpu.rollout), driven in-process the way verl's agent loop calls it.

The server must: never sample a vision token (a response holding ``<|image_pad|>`` breaks the agent loop's
M-RoPE computation), report the model's own log-probs under Qwen2.5-VL's M-RoPE positions (what verl's actor
computes, so ``training/rollout_probs_diff_*`` measures engine agreement), load the actor's weights only when
their digest checks out, and sample each prompt the same way whatever the order its requests arrive in.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch

from recipe.cpu.rollout import SeededSampler, TransformersRolloutServer
from recipe.cpu.weight_sync import state_digest
from recipe.row_images import chat_messages, row_images
from tests.fixtures.stage_data import make_row

RESPONSE_LENGTH = 24
VISION_BOOST = 40.0  # added to the vision tokens' logits: a model that wants to sample them


def server_for(model_dir: Path) -> TransformersRolloutServer:
    import recipe.cpu.tiny_model  # noqa: F401  (registers the tiny processor's stand-in video processor here)

    return TransformersRolloutServer(str(model_dir), trust_remote_code=False, response_length=RESPONSE_LENGTH, seed=0)


def prompt_of(
    server: TransformersRolloutServer, model_dir: Path, *, size: tuple[int, int] = (140, 112), index: int = 0
) -> tuple[list[int], list[Any]]:
    """A map question's prompt ids and images as verl's agent loop sends them to a server."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    row = make_row("planning", index, size=size)
    images = row_images(row)
    text = processor.apply_chat_template(chat_messages(row), add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=images, return_tensors="pt")["input_ids"][0].tolist(), images


def generate(server: TransformersRolloutServer, prompt: list[int], images: list[Any], **sampling: Any) -> Any:
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True, **sampling}
    return asyncio.run(server.generate("request", prompt_ids=prompt, sampling_params=params, image_data=images))


def generate_together(server: TransformersRolloutServer, requests: list[tuple[list[int], list[Any]]], **sampling):
    """The requests sent concurrently, as verl's agent loop sends a step's samples."""
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True, **sampling}

    async def all_at_once() -> list[Any]:
        calls = [
            server.generate(f"request-{i}", prompt_ids=prompt, sampling_params=params, image_data=images)
            for i, (prompt, images) in enumerate(requests)
        ]
        return list(await asyncio.gather(*calls))

    return asyncio.run(all_at_once())


def mixed_requests(server: TransformersRolloutServer, model_dir: Path) -> list[tuple[list[int], list[Any]]]:
    """Map questions with maps of different sizes (prompts of different lengths) and a text-only prompt."""
    requests = [
        prompt_of(server, model_dir, size=size, index=i) for i, size in enumerate([(140, 112), (56, 56), (112, 56)])
    ]
    text_only = requests[0][0][:8] + requests[0][0][-12:]
    assert server.image_token_id not in text_only
    return [*requests, (text_only, []), requests[0]]


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


def test_batched_vision_tokens_are_never_sampled(boosted_vision: TransformersRolloutServer, tiny_dir: Path) -> None:
    server = boosted_vision
    outputs = generate_together(server, mixed_requests(server, tiny_dir) * 2)
    assert max(server.batch_sizes) > 1
    assert all(o.token_ids and not set(server.vision_token_ids) & set(o.token_ids) for o in outputs)


def test_batched_greedy_requests_get_what_they_get_alone(sensitive_dir: Path) -> None:
    """Left-padded batches of prompts of different lengths (maps of three sizes, one text-only): the same greedy
    tokens and log-probs as one request at a time, on a model whose log-probs react to positions."""
    server = server_for(sensitive_dir)
    requests = mixed_requests(server, sensitive_dir)
    alone = [generate(server, prompt, images, temperature=0.0) for prompt, images in requests]
    assert server.batch_sizes == [1] * len(requests)
    together = generate_together(server, requests, temperature=0.0)
    assert server.batch_sizes[len(requests) :] == [len(requests)]
    assert len({len(prompt) for prompt, _ in requests}) == len(requests) - 1  # padding is exercised
    for one, batched in zip(alone, together, strict=True):
        assert batched.token_ids == one.token_ids
        assert torch.allclose(torch.tensor(batched.log_probs), torch.tensor(one.log_probs), atol=1e-5)
    assert len({tuple(o.token_ids) for o in alone}) > 1, "the prompts get different answers"


def test_requests_with_other_sampling_parameters_are_not_batched_together(tiny_dir: Path) -> None:
    server = server_for(tiny_dir)
    prompt, images = prompt_of(server, tiny_dir)

    async def two_kinds() -> list[Any]:
        greedy = {"temperature": 0.0, "logprobs": True}
        sampled = {"temperature": 1.0, "logprobs": True, "max_tokens": 5}
        calls = [
            server.generate(f"r{i}", prompt_ids=prompt, sampling_params=p, image_data=images)
            for i, p in enumerate([greedy, sampled, greedy, sampled])
        ]
        return list(await asyncio.gather(*calls))

    outputs = asyncio.run(two_kinds())
    assert sorted(server.batch_sizes) == [2, 2]
    assert outputs[0].token_ids == outputs[2].token_ids and len(outputs[1].token_ids) <= 5


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


def samples_per_prompt(requests: list[tuple[list[int], list[Any]]], outputs: list[Any]) -> dict[int, list]:
    """Each distinct prompt's samples as (tokens, log-probs), sorted by tokens: a GRPO group, as a set of samples."""
    groups: dict[int, list] = {}
    for (prompt, _), output in zip(requests, outputs, strict=True):
        groups.setdefault(hash(tuple(prompt)), []).append((tuple(output.token_ids), output.log_probs))
    return {key: sorted(samples, key=lambda sample: sample[0]) for key, samples in groups.items()}


def assert_same_samples(first: dict[int, list], second: dict[int, list]) -> None:
    """The same tokens per prompt, with log-probs equal up to float noise (batching pads rows differently)."""
    assert first.keys() == second.keys()
    for key in first:
        assert [tokens for tokens, _ in first[key]] == [tokens for tokens, _ in second[key]]
        for (_, one), (_, other) in zip(first[key], second[key], strict=True):
            assert torch.allclose(torch.tensor(one), torch.tensor(other), atol=1e-5)


def test_sampled_groups_do_not_depend_on_arrival_order_or_batching(tiny_dir: Path) -> None:
    """Three prompts x three samples at temperature 1: sent together, in reverse, and one at a time by three
    servers, every prompt gets the same three samples; a new weight version gets others."""
    probe = server_for(tiny_dir)
    requests = [prompt_of(probe, tiny_dir, index=i) for i in range(3)] * 3
    together = samples_per_prompt(requests, generate_together(server_for(tiny_dir), requests))
    backwards = list(reversed(requests))
    reversed_ = samples_per_prompt(backwards, generate_together(server_for(tiny_dir), backwards))
    alone_server = server_for(tiny_dir)
    alone = samples_per_prompt(requests, [generate(alone_server, prompt, images) for prompt, images in requests])
    assert alone_server.batch_sizes == [1] * len(requests)
    assert_same_samples(together, reversed_)
    assert_same_samples(together, alone)
    assert all(len({tokens for tokens, _ in samples}) == 3 for samples in together.values()), "samples must differ"
    probe.set_global_steps(1)
    later = samples_per_prompt(requests, generate_together(probe, requests))
    assert all([t for t, _ in later[k]] != [t for t, _ in together[k]] for k in together)


@pytest.mark.parametrize(
    ("top_k", "top_p", "kept"), [(-1, 1.0, [0, 1, 2, 3]), (2, 1.0, [0, 1]), (-1, 0.7, [0, 1]), (3, 0.9, [0, 1, 2])]
)
def test_seeded_sampler_draws_the_tempered_filtered_softmax(top_k: int, top_p: float, kept: list[int]) -> None:
    """20,000 rows with their own seeds: each token's frequency is its probability under ``logits / temperature``
    renormalised over the top-k / top-p set (4 standard errors), and no token outside the set is drawn."""
    temperature, rows = 0.8, 20_000
    logits = torch.tensor([0.4, 0.0, -0.55, -1.5]) * temperature  # probabilities about 0.45, 0.30, 0.17, 0.07
    sampler = SeededSampler(list(range(rows)), temperature=temperature, top_k=top_k, top_p=top_p)
    picks = sampler(None, logits.expand(rows, -1).clone()).argmax(-1)
    frequency = torch.bincount(picks, minlength=4).float() / rows
    expected = torch.zeros(4)
    expected[kept] = (logits / temperature)[kept].softmax(-1)
    assert torch.all(frequency[expected == 0] == 0), frequency
    assert torch.allclose(frequency, expected, atol=4 * (0.25 / rows) ** 0.5), (frequency, expected)


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
