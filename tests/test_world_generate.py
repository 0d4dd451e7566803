"""The world's generator: determinism, disjoint splits, held-out combinations, sample shape."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from internvl.data.world import FAMILIES, FAMILY_NAMES, SPLITS, generate_sample, generate_samples
from internvl.data.world.generate import sample_rng
from internvl.data.world.png import encode_png
from internvl.data.world.sample import ANSWER_TYPES, LETTERS
from internvl.data.world.splits import scene_hash, split_of
from internvl.data.world.vocab import IN_WORDS, LABELS, OOD_PAIRS, OOD_WORDS, WORDS
from internvl.errors import InputError

SRC = str(Path(__file__).resolve().parents[1] / "src")


def fingerprint(sample) -> str:
    """Hash of everything in a sample, pixels included."""
    h = hashlib.sha256()
    for picture in sample.images + sample.frames:
        h.update(encode_png(picture))
    h.update(json.dumps({**sample.__dict__, "images": [], "frames": []}, sort_keys=True).encode())
    return h.hexdigest()


def pixels(sample) -> set[str]:
    return {hashlib.sha256(p.tobytes()).hexdigest() for p in sample.images + sample.frames}


@pytest.fixture(scope="module")
def by_split() -> dict[str, list]:
    """24 samples per family per split."""
    return {split: generate_samples(24 * len(FAMILY_NAMES), split, seed=0) for split in SPLITS}


def test_every_family_makes_valid_samples(by_split):
    for split, samples in by_split.items():
        assert {s.family for s in samples} == set(FAMILY_NAMES)
        for s in samples:
            assert s.split == split and s.id == f"{split}-{s.family}-{int(s.id[-6:]):06d}"
            assert s.answer_type in ANSWER_TYPES and s.question and s.answer
            assert s.images or s.frames
            assert s.prompt.startswith(s.question) or s.steps
            if s.answer_type == "choice":
                assert s.answer in LETTERS[: len(s.options)] and len(set(s.options)) == len(s.options) >= 2
                assert s.prompt.count("\n") >= len(s.options)
            elif s.answer_space:
                assert s.answer in s.answer_space, s
            assert s.answer not in s.distractors
            assert (s.meta["ood"] is not None) == (split == "test-ood")


def test_same_seed_same_samples_and_workers_do_not_matter():
    one = generate_samples(40, "val", seed=3, workers=1)
    two = generate_samples(40, "val", seed=3, workers=2)
    assert [fingerprint(a) for a in one] == [fingerprint(b) for b in two]
    other = generate_samples(40, "val", seed=4)
    assert len({fingerprint(a) for a in one} & {fingerprint(b) for b in other}) == 0


def test_family_subset_gives_the_same_samples_as_the_mix():
    mixed = [s for s in generate_samples(30, "train", seed=1) if s.family == "counting"]
    alone = generate_samples(len(mixed), "train", seed=1, families=["counting"])
    assert [fingerprint(a) for a in mixed] == [fingerprint(b) for b in alone]


HASH_SCRIPT = """
import hashlib, json
from internvl.data.world import generate_samples
from internvl.data.world.png import encode_png
h = hashlib.sha256()
for s in generate_samples(40, "test", seed=5):
    for picture in s.images + s.frames:
        h.update(encode_png(picture))
    h.update(json.dumps({**s.__dict__, "images": [], "frames": []}, sort_keys=True).encode())
print(h.hexdigest())
"""


def test_deterministic_across_processes_and_hash_seeds():
    """Python's str hashing (set order) changes per process; the samples must not."""
    outs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": SRC}
        run = subprocess.run([sys.executable, "-c", HASH_SCRIPT], env=env, capture_output=True, text=True, check=True)
        outs.add(run.stdout)
    assert len(outs) == 1


def test_splits_share_no_image_and_no_scene(by_split):
    hashes = {split: {s.meta["scene_hash"] for s in samples} for split, samples in by_split.items()}
    images = {split: set().union(*(pixels(s) for s in samples)) for split, samples in by_split.items()}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not hashes[a] & hashes[b], (a, b)
            assert not images[a] & images[b], (a, b)


def test_split_is_the_hash_of_the_scene():
    for family in FAMILY_NAMES:
        for split in ("train", "val", "test"):
            for k in range(5):
                rng = sample_rng(0, split, family, k)
                while True:  # replay the generator's own draw loop
                    scene = FAMILIES[family].draw(rng, False)
                    if split_of(scene.content) == split:
                        break
                assert generate_sample(family, split, k).meta["scene_hash"] == scene_hash(scene.content)


def _pairs(node: Any) -> Iterator[tuple[str, str]]:
    """Every (colour, shape) drawn anywhere in a scene's content."""
    if isinstance(node, dict):
        if "shape" in node and "colour" in node:
            yield node["colour"], node["shape"]
        for value in node.values():
            yield from _pairs(value)
    elif isinstance(node, list):
        if len(node) == 5 and isinstance(node[0], str) and isinstance(node[1], str):
            yield node[1], node[0]
        else:
            for value in node:
                yield from _pairs(value)


def _draw(family: str, k: int, ood: bool):
    return FAMILIES[family].draw(sample_rng(9, "test-ood" if ood else "train", family, k), ood)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_in_distribution_scenes_never_hold_out_of_distribution_features(family):
    for k in range(60):
        scene = _draw(family, k, ood=False)
        assert not set(_pairs(scene.content)) & OOD_PAIRS
        c, task = scene.content, scene.task
        if family == "counting":
            assert 0 <= task["count"] <= 9
        if family == "reading":
            for it in c["items"]:
                assert it["text"] in IN_WORDS if it["kind"] == "word" else len(it["text"]) <= 4
        if family == "charts" or (family == "reasoning" and "labels" in c):
            assert 3 <= len(c["labels"]) <= 5
        if family == "detail":
            assert tuple(c["canvas"]) in ((1344, 448), (896, 896))
        if family == "reasoning" and "cards" in c:
            assert 2 <= len(c["cards"]) <= 3


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_test_ood_scenes_hold_the_unseen_feature(family):
    for k in range(30):
        scene = _draw(family, k, ood=True)
        c, task = scene.content, scene.task
        if family in ("recognition", "spatial", "grounding", "video", "multi_image"):
            pairs = set(_pairs(c))
            assert pairs & OOD_PAIRS
            if family == "multi_image":
                assert (task["colour"], task["shape"]) in OOD_PAIRS
            elif family == "video":
                assert (c["tracks"][0]["colour"], c["tracks"][0]["shape"]) in OOD_PAIRS
            else:
                target = c["objects"][task.get("target", 0)]
                assert (target[1], target[0]) in OOD_PAIRS
        elif family == "counting":
            assert 10 <= task["count"] <= 12
        elif family == "reading":
            item = c["items"][task["target"]]
            assert item["text"] in OOD_WORDS or len(item["text"]) == 5
        elif family == "charts":
            assert len(c["labels"]) >= 6
        elif family == "detail":
            assert tuple(c["canvas"]) == (1792, 448)
        elif family == "reasoning":
            assert len(c.get("cards", [])) == 4 or len(c.get("labels", [])) >= 6


def test_vocabulary_has_no_duplicates_and_holds_words_out():
    assert len(set(WORDS)) == len(WORDS) and len(set(LABELS)) == len(LABELS)
    assert OOD_WORDS and not OOD_WORDS & set(IN_WORDS)


def test_counts_cover_the_whole_training_range():
    counts = {generate_sample("counting", "train", k).meta["count"] for k in range(150)}
    assert counts == set(range(10))


def test_bad_arguments_raise_input_error():
    with pytest.raises(InputError, match="unknown split"):
        generate_samples(2, "dev")
    with pytest.raises(InputError, match="unknown family"):
        generate_samples(2, "train", families=["colour"])
