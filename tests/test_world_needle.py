"""The needle families (long multimodal contexts for V2PE): one image holds the pair asked for (or, in the
colour needles, the one object of the shape asked for), the image counts are as documented, test-ood asks
for held-out pairs, and the default mix is unchanged."""

from __future__ import annotations

import pytest

from internvl.data.world import generate_sample
from internvl.data.world.families import FAMILIES, FAMILY_NAMES, LONG_CONTEXT_FAMILIES
from internvl.data.world.score import SCORERS
from internvl.data.world.vocab import OOD_PAIRS


def holders(sample, colour: str, shape: str) -> list[int]:
    return [i for i, rows in enumerate(sample.meta["images"]) if any(r[:2] == [shape, colour] for r in rows)]


@pytest.mark.parametrize("family,least,most", [("needle", 4, 16), ("needle_x2", 32, 32), ("needle_x4", 64, 64)])
def test_one_image_holds_the_pair(family, least, most):
    for k in range(4):
        sample = generate_sample(family, "train", k)
        assert least <= len(sample.images) <= most
        words = sample.question.rstrip("?").split()
        colour, shape = words[-2], words[-1]
        target = sample.meta["target"]
        assert holders(sample, colour, shape) == [target]
        answer = sample.answer if sample.answer_type == "image" else sample.options[ord(sample.answer) - 65]
        assert answer == f"Image-{target + 1}"
        assert SCORERS[family](sample.answer, sample) == 1.0


def test_ood_asks_for_a_held_out_pair_and_the_default_mix_is_unchanged():
    sample = generate_sample("needle", "test-ood", 0)
    words = sample.question.rstrip("?").split()
    assert (words[-2], words[-1]) in OOD_PAIRS
    assert len(FAMILY_NAMES) == 10 and not set(FAMILY_NAMES) & set(LONG_CONTEXT_FAMILIES)
    needles = {"needle", "needle_x2", "needle_x4", "needle_x8"}
    assert set(LONG_CONTEXT_FAMILIES) == needles | {f"needle_colour{k}" for k in ("", "_x2", "_x4", "_x8")}
    assert set(LONG_CONTEXT_FAMILIES) <= set(FAMILIES)
    assert " an orange " in next(
        s.question for s in (generate_sample("needle", "train", k) for k in range(60)) if "orange" in s.question
    )


@pytest.mark.parametrize("family,least,most", [("needle_colour", 4, 16), ("needle_colour_x8", 128, 128)])
def test_a_colour_needle_has_one_object_of_the_shape_asked_for(family, least, most):
    colours = set()
    for k in range(6):
        sample = generate_sample(family, "train", k)
        assert least <= len(sample.images) <= most
        shape = sample.meta["shape"]
        assert shape in sample.question
        found = [(i, row[1]) for i, rows in enumerate(sample.meta["images"]) for row in rows if row[0] == shape]
        assert len(found) == 1 and found[0][0] == sample.meta["target"]
        colour = found[0][1]
        colours.add(colour)
        answer = sample.answer if sample.answer_type == "word" else sample.options[ord(sample.answer) - 65]
        assert answer == colour
        assert SCORERS[family](sample.answer, sample) == 1.0
    assert len(colours) > 1


def test_a_colour_needle_in_test_ood_is_a_held_out_pair():
    for k in range(4):
        sample = generate_sample("needle_colour", "test-ood", k)
        target = sample.meta["images"][sample.meta["target"]]
        assert any((row[1], row[0]) in OOD_PAIRS for row in target if row[0] == sample.meta["shape"])


def test_export_tsv_takes_a_long_family(tmp_path):
    from internvl.cli import main
    from internvl.eval.formats import load_items

    out = tmp_path / "needle_x2.tsv"
    assert main(["world", "export-tsv", "--out", str(out), "--families", "needle_x2", "--n", "2", "--no-progress"]) == 0
    items = load_items(out)
    assert len(items) == 2 and all(len(item.images) == 32 for item in items)
