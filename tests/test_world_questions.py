"""Several questions per picture: ``ask`` keeps each family's rules, and ``--questions-per-image K``
writes K human/gpt turn pairs per SFT line (K=1: today's lines exactly) that the SFT reader supervises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from internvl.data.sft import SampleSettings, build_datasets
from internvl.data.world import FAMILIES, FAMILY_NAMES, SCORERS, export_sft, generate_sample, load_conversations
from internvl.data.world.cli import main
from internvl.data.world.export import read_jsonl, sft_line
from internvl.data.world.families.counting import _matches
from internvl.data.world.generate import sample_rng
from internvl.data.world.media import save_media
from internvl.data.world.sample import media_prefix
from internvl.data.world.vocab import OOD_PAIRS
from internvl.errors import InputError
from internvl.inputs.prompt import IGNORE_INDEX

N = len(FAMILY_NAMES)  # one line per family


@pytest.fixture(scope="module")
def k3_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("k3")
    export_sft(out, N, "train", seed=0, workers=1, video_format="frames", progress=False, questions_per_image=3)
    return out


def test_one_question_per_image_is_exactly_the_single_sample_line(tmp_path):
    export_sft(tmp_path / "default", N, "train", seed=0, workers=1, video_format="frames", progress=False)
    export_sft(
        tmp_path / "k1", N, "train", seed=0, workers=1, video_format="frames", progress=False, questions_per_image=1
    )
    default = (tmp_path / "default" / "train.jsonl").read_text()
    assert (tmp_path / "k1" / "train.jsonl").read_text() == default
    root = tmp_path / "fresh"
    expected = [
        json.dumps(sft_line(save_media(generate_sample(f, "train", 0), root, "frames")), ensure_ascii=False)
        for f in FAMILY_NAMES
    ]
    assert default.splitlines() == expected
    assert all("followups" not in line["world"] for line in read_jsonl(tmp_path / "k1" / "train.jsonl"))


def test_k_questions_share_the_media_of_the_first_turn(k3_dir, tmp_path):
    export_sft(tmp_path, N, "train", seed=0, workers=1, video_format="frames", progress=False)
    singles = read_jsonl(tmp_path / "train.jsonl")
    lines = read_jsonl(k3_dir / "train.jsonl")
    assert json.loads((k3_dir / "meta.json").read_text())["world_train"]["length"] == N
    for line, single in zip(lines, singles):
        turns = line["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * 3
        assert turns[:2] == single["conversations"]  # the first question is today's, placeholders included
        world = line["world"]
        prefix = media_prefix(len(world["images"]), world["video"] is not None)
        assert turns[0]["value"].startswith(prefix)
        for t in turns[2::2]:
            assert "<image>" not in t["value"] and "<video>" not in t["value"]
        assert len(world["followups"]) == 2
        assert all(f["images"] == world["images"] and f["video"] == world["video"] for f in world["followups"])


def test_every_answer_is_right_for_its_question(k3_dir):
    conversations = load_conversations(k3_dir / "train.jsonl")
    assert sorted(conv[0].family for conv in conversations) == sorted(FAMILY_NAMES)
    line_turns = [line["conversations"] for line in read_jsonl(k3_dir / "train.jsonl")]
    for conv, turns in zip(conversations, line_turns):
        assert len(conv) == 3 and len({s.meta["scene_hash"] for s in conv}) == 1
        assert len({s.prompt for s in conv}) == 3  # never the very same question twice
        for k, sample in enumerate(conv):
            assert turns[2 * k]["value"].endswith(sample.prompt) and turns[2 * k + 1]["value"] == sample.response
            assert SCORERS[sample.family](sample.response, sample) == 1.0
            if sample.family == "counting":  # recounted from the scene, independently of the family code
                m = sample.meta
                count = sum(_matches(m["kind"], m["colour"], m["shape"], c, s) for s, c, *_ in m["objects"])
                assert str(count) == sample.meta.get("open_answer", sample.answer)
            if sample.family == "multi_image":
                assert len(sample.meta["counts"]) == len(sample.meta["images"])


def test_follow_ups_do_not_change_the_first_question_and_avoid_repeats():
    from internvl.data.world import generate_conversation

    for family in FAMILY_NAMES:
        conv = generate_conversation(family, "train", 3, seed=1, questions=4)
        first = generate_sample(family, "train", 3, seed=1)
        assert conv[0].question == first.question and conv[0].answer == first.answer
        assert [s.id for s in conv] == [first.id] + [f"{first.id}-q{q}" for q in (2, 3, 4)]
        assert len({s.prompt for s in conv}) == 4


def _ood_kept(family: str, content: dict, task: dict) -> bool:
    """Whether a test-ood task still asks about the held-out feature (as ``draw`` does)."""
    if family in ("recognition", "grounding", "reading"):
        return task["target"] == 0
    if family == "spatial":
        return 0 in (task["a"], task.get("b"))
    if family == "video":
        return task["target"] == 0
    if family == "multi_image":
        return task["kind"] == "contains" and (task["colour"], task["shape"]) in OOD_PAIRS
    if family == "counting":
        return 10 <= task["count"] <= 12
    return True  # charts, detail, reasoning: the held-out feature is the picture itself


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_ask_keeps_the_split_rules(family):
    fam = FAMILIES[family]
    for k in range(12):
        for ood in (False, True):
            rng = sample_rng(5, "test-ood" if ood else "train", family, k)
            scene = fam.draw(rng, ood)
            assert not ood or _ood_kept(family, scene.content, scene.task)
            for _ in range(4):
                task = fam.ask(scene.content, rng, ood)
                if ood:
                    assert _ood_kept(family, scene.content, task), task
                elif family == "counting":
                    assert 0 <= task["count"] <= 9
                elif family == "multi_image" and task["kind"] == "contains":
                    assert (task["colour"], task["shape"]) not in OOD_PAIRS


def test_sft_reader_supervises_every_answer(k3_dir, qwen2_tokenizer):
    settings = SampleSettings(num_image_token=4, tile_size=28, max_tiles=6)
    dataset = build_datasets(k3_dir / "meta.json", qwen2_tokenizer, settings)[0]
    lines = read_jsonl(k3_dir / "train.jsonl")
    checked = 0
    for i, line in enumerate(lines):
        if "video" in line:  # frame folders are not a video file the reader opens; the rule is the same
            continue
        sample = dataset[i]
        spans, current = [], []
        for token, label in zip(sample.input_ids.tolist(), sample.labels.tolist()):
            if label != IGNORE_INDEX:
                current.append(token)
            elif current:
                spans.append(qwen2_tokenizer.decode(current))
                current = []
        answers = [t["value"] for t in line["conversations"][1::2]]
        assert spans == [a + "<|im_end|>" for a in answers]
        text = qwen2_tokenizer.decode(sample.input_ids)
        assert text.count("<img>") == max(1, len(line["image"]) if isinstance(line["image"], list) else 1)
        first_user, _, rest = text.partition("<|im_start|>assistant\n")
        assert "<img>" in first_user and "<img>" not in rest  # the pictures sit in the first user turn only
        checked += 1
    assert checked == N - 1


def test_cli_option_and_bad_count(tmp_path):
    assert (
        main(
            [
                "generate",
                "--out",
                str(tmp_path / "w"),
                "--n",
                "2",
                "--families",
                "charts",
                "--workers",
                "1",
                "--no-progress",
                "--questions-per-image",
                "2",
            ]
        )
        == 0
    )
    line = read_jsonl(tmp_path / "w" / "train.jsonl")[0]
    assert len(line["conversations"]) == 4
    with pytest.raises(InputError):
        export_sft(tmp_path / "bad", 2, questions_per_image=0, progress=False)
