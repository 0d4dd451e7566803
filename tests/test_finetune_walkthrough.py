"""README, "Fine-tune on your own data": its commands, in order, on a tiny generated set (the same
generator as benchmarks/finetune_shapes.py), at a tiny scale: before, train, export, after, compare."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from internvl.cli import main

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from finetune_shapes import write_split  # noqa: E402


def test_the_readme_walkthrough_end_to_end(tmp_path, monkeypatch):
    data = tmp_path / "my-data"
    write_split(data, "train", 6, seed=1)
    write_split(data, "test", 2, seed=2)
    meta = {"my_train": {"root": f"{data}/", "annotation": str(data / "train.jsonl"), "repeat_time": 1}}
    (data / "meta.json").write_text(json.dumps(meta))
    monkeypatch.chdir(tmp_path)  # the README's relative paths
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Fine-tune on your own data") :]
    commands = section[section.index("```bash") + len("```bash") : section.index("```", section.index("```bash") + 7)]
    tiny = {  # the README's commands, each shrunk to seconds
        "eval": ["--limit", "2", "--max-new-tokens", "4", "--no-progress"],
        "train": ["train.max_steps=2", "data.options.num_workers=0", "log.progress_bar=false", "log.plot=false"],
    }
    ran = []
    for line in commands.strip().splitlines():
        argv = line.split()
        assert argv[0] == "internvl"
        argv = [str(ROOT / a) if a.startswith("configs/") else a for a in argv[1:]]
        extra = tiny["eval"] if argv[:2] == ["eval", "run"] else tiny["train"] if argv[:2] == ["train", "sft"] else []
        assert main(argv + extra) == 0, line
        ran.append(argv[:2])
    assert ran == [["eval", "run"], ["train", "sft"], ["train", "export"], ["eval", "run"], ["eval", "compare"]]
    before = json.loads((tmp_path / "runs/mine-before/summary.json").read_text())
    after = json.loads((tmp_path / "runs/mine-after/summary.json").read_text())
    assert before["n"] == after["n"] == 2
    settings = json.loads((tmp_path / "runs/mine-after/settings.json").read_text())["settings"]
    assert settings["model"] == str(tmp_path / "runs/mine-model")  # recorded as an absolute path
    assert (tmp_path / "runs/mine-compare/compare.json").is_file()
