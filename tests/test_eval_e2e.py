"""`internvl eval run` end to end on a tiny random model: answers, scores, restart after interruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from internvl.cli import main as cli_main
from internvl.eval import runner
from tests.tiny import build_chat_model_folder


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return build_chat_model_folder(tmp_path_factory.mktemp("tiny-eval-model"))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval-data")
    lines = []
    for i in range(6):
        image = folder / f"{i}.png"
        Image.new("RGB", (120 + 40 * i, 100), ("red", "blue", "green")[i % 3]).save(image)
        if i % 2:
            lines.append(
                {
                    "id": f"q{i}",
                    "question": "What colour is the image?",
                    "answer": ("red", "blue", "green")[i % 3],
                    "image": str(image),
                    "category": "colour",
                    "metric": "exact",
                }
            )
        else:
            lines.append(
                {
                    "id": f"q{i}",
                    "question": "Which colour?",
                    "answer": "A",
                    "image": str(image),
                    "options": {"A": "red", "B": "blue"},
                    "category": "choice",
                    "metric": "mcq",
                }
            )
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def run(model_folder: Path, data_file: Path, out: Path, *options: str) -> int:
    return cli_main(
        [
            "eval",
            "run",
            "--data",
            str(data_file),
            "--out",
            str(out),
            "--model",
            str(model_folder),
            "--batch-size",
            "3",
            "--max-tiles",
            "2",
            "--max-new-tokens",
            "6",
            "--no-progress",
            *options,
        ]
    )


def test_eval_run_end_to_end_and_restart(model_folder, data_file, tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}
    original = runner.append_records

    def interrupt_after_first_batch(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "append_records", interrupt_after_first_batch)
    assert run(model_folder, data_file, out) == 130
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 3
    monkeypatch.undo()

    assert run(model_folder, data_file, out) == 0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in predictions) == [f"q{i}" for i in range(6)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 6 and 0.0 <= summary["overall"] <= 100.0
    assert set(summary["categories"]) == {"colour", "choice"}
    assert (out / "settings.json").exists() and (out / "chart.png").exists()
    settings = json.loads((out / "settings.json").read_text())
    settings = settings.get("settings", settings)
    assert settings["max_tiles"] == 2 and settings["generation"]["max_new_tokens"] == 6


def test_answers_equal_the_chat_api(model_folder, data_file, tmp_path):
    from internvl.chat import load
    from internvl.eval.formats import load_items

    out = tmp_path / "run"
    assert run(model_folder, data_file, out) == 0
    predictions = {
        json.loads(line)["id"]: json.loads(line)["prediction"]
        for line in (out / "predictions.jsonl").read_text().splitlines()
    }
    chat = load(model_folder, max_tiles=2)
    item = load_items(data_file)[1]
    assert predictions[item.id] == chat.ask(item.prompt, images=item.load_images(), max_new_tokens=6)


def test_the_v2pe_step_is_set_per_run(model_folder, data_file, tmp_path, capsys):
    """`--v2pe-delta` answers as `load(..., v2pe_delta=...)` does, and settings.json records it."""
    from internvl.chat import load
    from internvl.eval.formats import load_items

    out = tmp_path / "run"
    assert run(model_folder, data_file, out, "--v2pe-delta", "0.0625") == 0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    settings = json.loads((out / "settings.json").read_text())
    assert settings.get("settings", settings)["extra"]["v2pe_delta"] == 0.0625
    item = load_items(data_file)[1]
    answer = next(p["prediction"] for p in predictions if p["id"] == item.id)
    v2pe = load(model_folder, max_tiles=2, v2pe_delta=0.0625)
    plain = load(model_folder, max_tiles=2)
    assert answer == v2pe.ask(item.prompt, images=item.load_images(), max_new_tokens=6)
    assert answer != plain.ask(item.prompt, images=item.load_images(), max_new_tokens=6)
    assert run(model_folder, data_file, tmp_path / "bad", "--v2pe-delta", "0") == 2
    assert "--v2pe-delta must be a number in (0, 1]" in capsys.readouterr().err


def test_eval_over_a_world_split(model_folder, tmp_path):
    """A small world test split exported as TSV runs through `internvl eval run` with the world's own
    prompts and per-answer-type metrics; video rows are asked as frame sequences."""
    from internvl.data.world import export_tsv
    from internvl.eval.formats import load_items

    data = export_tsv(
        tmp_path / "world.tsv",
        20,
        split="test",
        families=["recognition", "grounding", "video", "charts"],
        progress=False,
    )
    items = load_items(data)
    by_family = {item.category: item for item in items}
    grounding = by_family["grounding"]
    assert grounding.metric == "iou"
    assert grounding.prompt == json.loads(grounding.meta["record"])["question"]  # the world's prompt, verbatim
    assert by_family["charts"].metric in ("numeric", "mcq", "exact")
    assert by_family["video"].meta["media"] == "video" and len(by_family["video"].images) >= 8
    out = tmp_path / "run"
    assert (
        cli_main(
            [
                "eval",
                "run",
                "--data",
                str(data),
                "--out",
                str(out),
                "--model",
                str(model_folder),
                "--batch-size",
                "4",
                "--max-tiles",
                "2",
                "--max-new-tokens",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["categories"]) == {"recognition", "grounding", "video", "charts"}
    assert summary["n"] == 20
