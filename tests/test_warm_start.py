"""The tiny model's warm start (recipe.cpu.warm_start): held-out cities only, whole-name tokens, one cached model per
setting, and the step-0 reachability check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.synthetic import SyntheticParams, generate_dataset
from recipe.cpu.tiny_model import (
    build_tiny_qwen,
    name_words,
    prepare_warm_tiny_qwen,
    stamp_folder,
    warm_start_stamp,
    warm_start_tiny_qwen,
    word_token_ids,
)
from recipe.cpu.warm_start import Reachability, check_held_out, data_files, map_names, parse_repeats, read_rows


def synthetic(folder: Path, cities: int, seed: int, questions: int = 6) -> Path:
    params = SyntheticParams(cities=cities, seed=seed, questions_per_city=questions, render=False, max_pixels=12544)
    return generate_dataset(folder, params)


@pytest.fixture(scope="module")
def run_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run's data: 3 cities (train, validation, test) of seed 0."""
    return synthetic(tmp_path_factory.mktemp("run") / "data", 3, 0)


def test_a_warm_start_on_other_cities_is_held_out(run_data: Path, tmp_path: Path) -> None:
    check_held_out(synthetic(tmp_path / "warm", 3, 1000), run_data)


def test_a_warm_start_sharing_a_city_with_any_split_is_refused(run_data: Path, tmp_path: Path) -> None:
    """Seed 0 with four cities draws the run's three (whichever split they landed in) and one more."""
    with pytest.raises(ValueError, match="must not see the run's questions"):
        check_held_out(synthetic(tmp_path / "warm", 4, 0), run_data)
    test_only = tmp_path / "test_only"
    test_only.mkdir()
    (test_only / "test.parquet").write_bytes((run_data / "test.parquet").read_bytes())
    with pytest.raises(ValueError, match="warm_start.seed"):
        check_held_out(synthetic(tmp_path / "warm2", 4, 0), test_only)


def test_every_word_of_the_maps_names_is_one_token(run_data: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    names = map_names(data_files(run_data))
    network = json.loads(read_rows([run_data / "test.parquet"])[0]["reward_model"]["ground_truth"])["network"]
    assert set(network) <= set(names) and {s for line in network.values() for s in line} <= set(names)
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_qwen(tmp_path / "model", names=names))
    words = name_words(names)
    assert len(words) > 50
    assert all(len(tokenizer.encode(" " + word, add_special_tokens=False)) == 1 for word in words)
    from transformers import Qwen2_5_VLForConditionalGeneration

    from recipe.cpu.tiny_model import NAME_EMBEDDING_STD

    embeddings = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "model").get_input_embeddings().weight
    ids = word_token_ids(tokenizer, words)
    others = sorted(set(range(len(embeddings))) - set(ids))
    assert abs(embeddings[ids].std().item() - NAME_EMBEDDING_STD) < 0.05 * NAME_EMBEDDING_STD
    assert embeddings[others].std().item() < 0.05  # Qwen's initializer (0.02) for every other token
    plain = AutoTokenizer.from_pretrained(build_tiny_qwen(tmp_path / "plain"))
    assert sum(len(plain.encode(" " + word, add_special_tokens=False)) > 1 for word in words) > len(words) // 2


def test_the_warm_start_can_keep_only_some_question_types(run_data: Path) -> None:
    files = data_files(run_data)
    kinds = {json.loads(r["reward_model"]["ground_truth"])["question_type"] for r in read_rows(files)}
    planning = read_rows(files, question_types=["planning"])
    assert len(kinds) > 1 and planning
    assert {json.loads(r["reward_model"]["ground_truth"])["question_type"] for r in planning} == {"planning"}
    assert len(read_rows(files, question_types=["planning"], limit=2, seed=5)) == 2


def test_repeats_give_a_question_type_more_of_every_pass(run_data: Path) -> None:
    files = data_files(run_data)

    def kind(row: dict) -> str:
        return json.loads(row["reward_model"]["ground_truth"])["question_type"]

    once = read_rows(files)
    planning = sum(kind(r) == "planning" for r in once)
    thrice = read_rows(files, repeats=dict(parse_repeats({"planning": 3})))
    assert planning and len(thrice) == len(once) + 2 * planning
    assert sum(kind(r) == "planning" for r in thrice) == 3 * planning
    assert [r for r in thrice if kind(r) != "planning"] == [r for r in once if kind(r) != "planning"]
    with pytest.raises(ValueError, match=r"warm_start\.repeats: no row of question type \['Planning'\]"):
        read_rows(files, repeats={"Planning": 2})
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match=r"warm_start\.repeats\.planning"):
            parse_repeats({"planning": bad})


def test_the_warm_started_model_is_cached_per_setting(run_data: Path, tmp_path: Path) -> None:
    rows = read_rows([run_data / "test.parquet"], limit=4, seed=0)
    names = map_names(data_files(run_data))
    kwargs = {"names": names, "hidden_size": 32, "layers": 1, "heads": 2, "batch_size": 2, "learning_rate": 1e-3}

    def prepare(**changed: object) -> tuple[Path, bool]:
        shape = {**kwargs, "steps": 2, **changed}
        return prepare_warm_tiny_qwen(stamp_folder(tmp_path, warm_start_stamp(rows, **shape)), rows, **shape)

    first, built = prepare()
    again, rebuilt = prepare()
    other, _ = prepare(steps=3)
    fewer_names, _ = prepare(names=names[:-5])
    assert (built, rebuilt, again) == (True, False, first)
    assert len({first, other, fewer_names}) == 3 and first.parent == tmp_path
    stamp = json.loads((first / "rewardmap_warm_start.json").read_text())
    assert stamp["stamp"]["rows"] == 4 and stamp["loss_last"] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (first, other, fewer_names))


def test_reachability_names_every_component_no_sample_reached() -> None:
    everything = Reachability(1.0, planning=8, planning_format=2, planning_detail=1, vqa=8, vqa_correct=3)
    assert everything.problems() == []
    assert "planning format 2/8, detail > 0 1/8, correct 0/8" in everything.line()
    nothing = Reachability(1.0, planning=8, vqa=8)
    assert len(nothing.problems()) == 3
    assert Reachability(1.0, planning=8, planning_format=1, planning_detail=1).problems() == []  # no VQA in the run


def test_the_answer_loss_is_the_models_own_loss(run_data: Path, tmp_path: Path) -> None:
    """The warm start applies the LM head at answer positions only: the same loss as the model's full forward."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from recipe.cpu.tiny_model import _answer_loss, _batch, _encode_rows

    folder = build_tiny_qwen(tmp_path / "model", names=map_names(data_files(run_data)), hidden_size=32, layers=1)
    processor = AutoProcessor.from_pretrained(folder)
    encoded = _encode_rows(processor, read_rows([run_data / "test.parquet"], limit=3, seed=0))
    image = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, attn_implementation="sdpa")
    with torch.no_grad():
        full = model(**_batch(encoded, processor.tokenizer.pad_token_id, image)).loss
        model.model.rope_deltas = None
        answered = _answer_loss(model, _batch(encoded, processor.tokenizer.pad_token_id, image))
    torch.testing.assert_close(answered, full, rtol=1e-5, atol=1e-5)


def test_the_name_loss_weighs_copyable_names_as_much_as_the_rest(run_data: Path, tmp_path: Path) -> None:
    """With name ids: the mean over the answer's names that its prompt contains plus the mean over its other tokens
    (names the prompt lacks left out); names only: the first mean alone. Checked against the full forward's logits."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from recipe.cpu.tiny_model import _answer_loss, _batch, _encode_rows

    names = map_names(data_files(run_data))
    folder = build_tiny_qwen(tmp_path / "model", names=names, hidden_size=32, layers=1)
    processor = AutoProcessor.from_pretrained(folder)
    encoded = _encode_rows(processor, read_rows([run_data / "planning.parquet"], limit=3, seed=0))
    pad, image = processor.tokenizer.pad_token_id, processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    words = [w for w in name_words(names) if w not in {"Station", "Line"} and not w.isdigit()]
    name_ids = torch.tensor(word_token_ids(processor.tokenizer, words))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, attn_implementation="sdpa")
    with torch.no_grad():
        batch = _batch(encoded, pad, image)
        labels, input_ids = batch["labels"], batch["input_ids"]
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        model.model.rope_deltas = None
        split = _answer_loss(model, _batch(encoded, pad, image), name_ids)
        model.model.rope_deltas = None
        alone = _answer_loss(model, _batch(encoded, pad, image), name_ids, names_only=True)
    copyable, other = [], []
    for i in range(len(encoded)):
        prompt = set(input_ids[i][labels[i] == -100].tolist())
        for t in range(input_ids.shape[1] - 1):
            target = int(labels[i, t + 1])
            if target == -100:
                continue
            ce = torch.nn.functional.cross_entropy(logits[i, t].float()[None], torch.tensor([target]))
            if target not in set(name_ids.tolist()):
                other.append(ce)
            elif target in prompt:  # a name the prompt lacks (a transfer station) counts in neither
                copyable.append(ce)
    assert copyable and other  # each answer names its endpoints, which its question contains
    torch.testing.assert_close(split, torch.stack(copyable).mean() + torch.stack(other).mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone, torch.stack(copyable).mean(), rtol=1e-5, atol=1e-5)


def test_frozen_name_words_keep_their_initial_embeddings(run_data: Path, tmp_path: Path) -> None:
    """The held-out cities' own words are not trained, the other tokens are (input and output embeddings: tied)."""
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    rows = read_rows([run_data / "test.parquet"], limit=4, seed=0)
    names = map_names(data_files(run_data))
    folder = build_tiny_qwen(tmp_path / "model", names=names, hidden_size=32, layers=1)
    before = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder).get_input_embeddings().weight.detach().clone()
    frozen = [w for w in name_words(names) if w not in {"Station", "Line"}]
    warm_start_tiny_qwen(folder, rows, steps=3, learning_rate=1e-2, batch_size=2, frozen_words=frozen)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    after = model.get_input_embeddings().weight.detach()
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    ids = word_token_ids(AutoTokenizer.from_pretrained(folder), frozen)
    assert len(ids) >= len(frozen)  # each word with and without its leading space, where the BPE has both
    moved = (after - before).abs().amax(dim=1)
    assert torch.equal(moved[ids], torch.zeros(len(ids)))
    trained = [i for i in range(len(moved)) if i not in set(ids)]
    assert moved[trained].max() > 0
