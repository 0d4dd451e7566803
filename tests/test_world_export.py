"""Exports read back: SFT meta + JSONL (docs/sft.md), VLMEvalKit TSV, preference pairs (docs/preference-and-rewards.md#mpo-pairs), the CLI."""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from internvl.data.world import (
    FAMILY_NAMES,
    SCORERS,
    check_steps,
    export_pairs,
    export_sft,
    export_tsv,
    first_wrong_step,
    generate_samples,
    load_samples,
    read_video_frames,
)
from internvl.data.world.cli import add_world_command, main
from internvl.data.world.export import TSV_COLUMNS, read_jsonl
from internvl.data.world.media import has_pyav
from internvl.errors import InputError

N = 2 * len(FAMILY_NAMES)


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    export_sft(out, N, "val", seed=0, workers=2, progress=False)
    return out


def test_sft_meta_follows_spec(sft_dir):
    meta = json.loads((sft_dir / "meta.json").read_text())
    assert list(meta) == ["world_val"]
    entry = meta["world_val"]
    assert set(entry) == {"root", "annotation", "data_augment", "repeat_time", "length", "max_dynamic_patch"}
    assert entry["annotation"].endswith("val.jsonl") and Path(entry["annotation"]).exists()
    assert entry["length"] == N and entry["max_dynamic_patch"] == 6  # the detail family needs 3-4 tiles


def test_sft_lines_point_at_real_media_and_match_the_samples(sft_dir):
    root = Path(json.loads((sft_dir / "meta.json").read_text())["world_val"]["root"])
    lines = read_jsonl(sft_dir / "val.jsonl")
    fresh = generate_samples(N, "val", seed=0)
    assert [line["id"] for line in lines] == [s.id for s in fresh]
    for line, sample in zip(lines, fresh):
        human, gpt = line["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt" and gpt["value"] == sample.response
        if "video" in line:
            assert human["value"].startswith("<video>\n")
            frames = read_video_frames(root / line["video"])
            assert len(frames) == len(sample.frames) and frames[0].size == sample.frames[0].size
        elif isinstance(line["image"], list):
            assert human["value"].startswith("Image-1: <image>\nImage-2: <image>\n")
            assert human["value"].count("<image>") == len(line["image"]) == len(sample.images)
        else:
            assert human["value"].startswith("<image>\n") and human["value"].count("<image>") == 1
            on_disk = Image.open(root / line["image"])
            assert on_disk.tobytes() == sample.images[0].tobytes()  # lossless
    restored = load_samples(sft_dir / "val.jsonl")
    for s in restored:
        assert SCORERS[s.family](s.response, s) == 1.0


def test_video_as_frame_folder(tmp_path):
    export_sft(tmp_path, 2, "train", families=["video"], video_format="frames", progress=False)
    line = read_jsonl(tmp_path / "train.jsonl")[0]
    assert line["video"].endswith("/")
    frames = read_video_frames(tmp_path / "images" / line["video"])
    assert 8 <= len(frames) <= 16


@pytest.mark.skipif(not has_pyav(), reason="PyAV not installed")
def test_mp4_is_reproducible(tmp_path):
    for name in ("a", "b"):
        export_sft(tmp_path / name, 1, "train", families=["video"], video_format="mp4", progress=False)
    video = read_jsonl(tmp_path / "a" / "train.jsonl")[0]["video"]
    assert video.endswith(".mp4")
    assert (tmp_path / "a" / "images" / video).read_bytes() == (tmp_path / "b" / "images" / video).read_bytes()


def test_tsv_round_trip(tmp_path):
    path = export_tsv(tmp_path / "world.tsv", N, "test", seed=1, progress=False)
    csv.field_size_limit(2**31 - 1)  # base64 images are long fields
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert tuple(rows[0]) == TSV_COLUMNS and len(rows) == N
    fresh = generate_samples(N, "test", seed=1)
    for i, (row, sample) in enumerate(zip(rows, fresh)):
        assert row["index"] == str(i) and row["id"] == sample.id and row["answer"] == sample.answer
        assert row["category"] == sample.family and row["question"] == sample.question
        assert [row[k] for k in "ABCD" if row[k]] == sample.options
        pictures = sample.images or sample.frames
        encoded = json.loads(row["image"]) if row["image"].startswith("[") else [row["image"]]
        assert len(encoded) == len(pictures)
        decoded = Image.open(io.BytesIO(base64.b64decode(encoded[0])))
        assert decoded.tobytes() == pictures[0].tobytes()
    restored = load_samples(path)
    assert [s.answer for s in restored] == [s.answer for s in fresh]


def test_pairs_file(tmp_path):
    meta = export_pairs(tmp_path, 3 * len(FAMILY_NAMES), "train", seed=0, progress=False)
    assert "world_pairs_train" in json.loads(meta.read_text())
    lines = read_jsonl(tmp_path / "pairs_train.jsonl")
    samples = load_samples(tmp_path / "pairs_train.jsonl")
    assert {"reasoning", "grounding", "detail"} <= {s.family for s in samples}
    for line, s in zip(lines, samples):
        assert {"question", "chosen", "rejected", "answer_gt"} <= set(line) and ("image" in line or "video" in line)
        assert "<image>" in line["question"] or line["question"].startswith("<video>\n")
        assert line["chosen"] != line["rejected"]
        assert SCORERS[s.family](line["chosen"], s) == 1.0 and SCORERS[s.family](line["rejected"], s) == 0.0
        if s.steps:
            assert check_steps(line["chosen"], s) == [True] * len(s.steps)
            assert first_wrong_step(line["rejected"], s) == line["wrong_step"]
        else:
            assert "wrong_step" not in line


def test_cli_in_process(tmp_path, capsys):
    assert (
        main(
            [
                "generate",
                "--out",
                str(tmp_path / "g"),
                "--split",
                "test-ood",
                "--n",
                "4",
                "--families",
                "counting,reading",
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "wrote 4 test-ood samples" in capsys.readouterr().out
    lines = (tmp_path / "g" / "test-ood.jsonl").read_text().splitlines()
    assert {json.loads(line)["world"]["family"] for line in lines} == {"counting", "reading"}
    assert main(["export-tsv", "--out", str(tmp_path / "t.tsv"), "--n", "3", "--workers", "1", "--no-progress"]) == 0
    assert main(["pairs", "--out", str(tmp_path / "p"), "--n", "2", "--families", "reasoning", "--no-progress"]) == 0
    assert (tmp_path / "p" / "pairs_train.jsonl").exists()
    capsys.readouterr()
    assert main(["show", "--family", "grounding", "--save", str(tmp_path / "s.png")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["family"] == "grounding" and (tmp_path / "s.png").exists()
    assert main(["families"]) == 0
    assert main(["generate", "--out", str(tmp_path / "x"), "--n", "2", "--families", "nope", "--no-progress"]) == 2
    assert "unknown family" in capsys.readouterr().err


def test_world_command_plugs_into_a_parent_parser(tmp_path):
    parser = argparse.ArgumentParser(prog="internvl")
    add_world_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["world", "export-tsv", "--out", str(tmp_path / "w.tsv"), "--n", "2", "--no-progress"])
    assert args.func(args) == 0 and (tmp_path / "w.tsv").exists()


def test_bad_counts_and_formats(tmp_path):
    with pytest.raises(InputError, match="at least 1"):
        export_sft(tmp_path, 0)
    with pytest.raises(InputError, match="video format"):
        export_sft(tmp_path, 1, video_format="gif")
