"""Benchmark readers (VLMEvalKit TSV, our JSONL) and prompt building."""

import base64
import io
import json
import random

import pytest
from PIL import Image

from internvl.errors import InputError
from internvl.eval.formats import EvalItem, load_items, read_jsonl, read_tsv
from internvl.eval.prompts import MCQ_SUFFIX, SHORT_ANSWER_SUFFIX, build_cot_prompt, build_prompt


def png_bytes(colour=(255, 0, 0), size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(colour=(255, 0, 0)) -> str:
    return base64.b64encode(png_bytes(colour)).decode()


def write_tsv(path, header, rows):
    lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- prompts ----------------------------------------------------------------------------------------------


def test_mcq_prompt_the_internvl_way():
    prompt = build_prompt("What animal is this?", "mcq", {"A": "cat", "B": "dog"}, hint="Look closely.")
    assert prompt == f"Look closely.\nWhat animal is this?\nA. cat\nB. dog\n{MCQ_SUFFIX}"


def test_chinese_mcq_prompt_asks_in_chinese():
    assert build_prompt("这是什么动物？", "mcq", {"A": "猫", "B": "狗"}).endswith("\n请直接回答选项字母。")


def test_short_answer_and_open_prompts():
    assert build_prompt("How many dogs?", "numeric") == f"How many dogs?\n{SHORT_ANSWER_SUFFIX}"
    assert build_prompt(f"How many dogs?\n{SHORT_ANSWER_SUFFIX}", "exact") == f"How many dogs?\n{SHORT_ANSWER_SUFFIX}"
    assert build_prompt("Explain the joke.", "judge") == "Explain the joke."
    assert build_prompt("Where is the dog?", "iou") == "Where is the dog?"


def test_cot_prompt_drops_the_short_answer_instruction():
    prompt = build_cot_prompt(f"Q?\nA. x\nB. y\n{MCQ_SUFFIX}")
    assert prompt.startswith("Your task is to answer the question below.")
    assert prompt.endswith("Question:\n\nQ?\nA. x\nB. y")
    assert MCQ_SUFFIX not in prompt


def test_cot_prompt_does_not_wrap_a_reasoning_question_twice():
    once = build_cot_prompt("What is 2 + 3?")
    assert build_cot_prompt(once) == once
    assert build_cot_prompt(f"{once}\nA. 5\nB. 6\n{MCQ_SUFFIX}") == f"{once}\nA. 5\nB. 6"


# --- EvalItem -------------------------------------------------------------------------------------------------


def test_item_builds_its_prompt_and_normalises_mcq_answers():
    item = EvalItem(id="1", question="Q?", answers=("dog",), metric="mcq", options={"A": "cat", "B": "dog"})
    assert item.answers == ("B",)
    assert item.prompt.endswith(MCQ_SUFFIX)
    assert EvalItem(id="2", question="Q?", answers=("(a)",), metric="mcq", options={"A": "x", "B": "y"}).answer == "A"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric": "bleu"}, "unknown metric"),
        ({"metric": "mcq"}, "needs options"),
        ({"metric": "mcq", "options": {"A": "x"}, "answers": ("Z",)}, "neither an option letter"),
        ({"metric": "yorn", "answers": ("maybe",)}, "yes/no"),
        ({"metric": "iou", "answers": ("left",)}, "box"),
    ],
)
def test_item_validation(kwargs, message):
    with pytest.raises(InputError, match=message):
        EvalItem(id="x", question="Q?", **kwargs)


def test_load_images_from_every_source(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes((0, 255, 0)))
    item = EvalItem(id="1", question="Q", images=(png_bytes(), path, Image.new("L", (3, 3))))
    images = item.load_images()
    assert [im.mode for im in images] == ["RGB"] * 3
    assert images[1].getpixel((0, 0)) == (0, 255, 0)


# --- TSV -----------------------------------------------------------------------------------------------------------


def test_tsv_mcq_with_hint_category_and_image_references(tmp_path):
    path = write_tsv(
        tmp_path / "mmbench.tsv",
        ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"],
        [
            ["10", "What animal?", "A farm.", "cat", "dog", "cow", "", "C", "animals", "perception", b64()],
            ["11", "What colour?", "nan", "red", "blue", "", "", "A", "colours", "perception", "10"],
        ],
    )
    first, second = read_tsv(path)
    assert (first.id, first.metric, first.answers, first.category) == ("10", "mcq", ("C",), "animals")
    assert first.options == {"A": "cat", "B": "dog", "C": "cow"}  # the empty D is no option
    assert first.prompt == f"A farm.\nWhat animal?\nA. cat\nB. dog\nC. cow\n{MCQ_SUFFIX}"
    assert first.meta["l2-category"] == "perception"
    assert second.hint is None and second.options == {"A": "red", "B": "blue"}
    assert second.images == first.images and second.images[0] is first.images[0]  # shared, decoded once
    assert second.load_images()[0].getpixel((0, 0)) == (255, 0, 0)


def test_tsv_infers_yes_no_and_vqa_and_reads_answerless_splits(tmp_path):
    path = write_tsv(
        tmp_path / "mixed.tsv",
        ["index", "question", "answer", "image"],
        [["1", "Is it red?", "Yes", b64()], ["2", "How many?", "3", b64()], ["3", "Name it", "", b64()]],
    )
    items = read_tsv(path)
    assert [i.metric for i in items] == ["yorn", "exact", "exact"]
    assert items[0].prompt == f"Is it red?\n{SHORT_ANSWER_SUFFIX}"
    assert items[2].answers == ()  # no ground truth: answered, not scored
    assert items[0].category == "other"


def test_tsv_kind_and_metric_force_the_metric(tmp_path):
    path = write_tsv(
        tmp_path / "d.tsv", ["index", "question", "answer"], [["1", "Is it red?", "yes"], ["2", "How many?", "3"]]
    )
    assert [i.metric for i in load_items(path, kind="vqa")] == ["exact", "exact"]
    assert [i.metric for i in load_items(path, kind="vqa", metric="anls")] == ["anls", "anls"]
    with pytest.raises(InputError, match="yes/no"):
        load_items(path, kind="yorn")
    with pytest.raises(InputError, match="line 2 .index '1'.: kind 'mcq' but the row has no options"):
        load_items(path, kind="mcq")
    with pytest.raises(InputError, match="scored with metric 'mcq'"):
        load_items(path, kind="mcq", metric="exact")


def test_tsv_multi_image_list_and_image_path(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png_bytes())
    (tmp_path / "img" / "b.png").write_bytes(png_bytes())
    path = write_tsv(
        tmp_path / "mmmu.tsv",
        ["index", "question", "answer", "image", "image_path"],
        [
            ["1", "Compare <image 1> and <image 2>", "same", str([b64(), b64((0, 0, 255))]), ""],
            ["2", "What is it?", "a", "", "img/a.png"],
            ["3", "What are they?", "b", "", "['img/a.png', 'img/b.png']"],
        ],
    )
    items = read_tsv(path)
    assert len(items[0].images) == 2 and items[0].load_images()[1].getpixel((0, 0)) == (0, 0, 255)
    assert items[1].images == (tmp_path / "img" / "a.png",)
    assert len(items[2].images) == 2


def test_tsv_quoted_fields_with_tabs_and_newlines(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text(
        'index\tquestion\tanswer\n1\t"Line one\nline ""two""\twith tab"\tx\n2\tplain\ty\n', encoding="utf-8"
    )
    items = read_tsv(path)
    assert items[0].question == 'Line one\nline "two"\twith tab'
    assert items[1].id == "2"


def test_tsv_big_base64_field(tmp_path):
    noisy = Image.frombytes("RGB", (300, 300), random.Random(0).randbytes(300 * 300 * 3))  # incompressible
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    assert len(image) > 131072  # beyond csv's default field limit
    path = write_tsv(tmp_path / "big.tsv", ["index", "question", "answer", "image"], [["1", "Q", "a", image]])
    assert read_tsv(path)[0].load_images()[0].size == (300, 300)


@pytest.mark.parametrize(
    "header, rows, message",
    [
        (["question", "answer"], [["Q", "a"]], r"line 1: the header has no 'index' column"),
        (["index", "question", "answer"], [["1", "Q", "a"], ["2", "Q"]], r"line 3: 2 fields, the header has 3"),
        (["index", "question", "answer"], [["1", "Q", "a"], ["1", "Q", "b"]], r"line 3 \(index '1'\): duplicate index"),
        (
            ["index", "question", "A", "B", "answer"],
            [["1", "Q", "x", "y", "C"]],
            r"line 2 \(index '1'\): .*neither an option letter",
        ),
        (
            ["index", "question", "answer", "image"],
            [["1", "Q", "a", "not base64!"]],
            r"line 2 \(index '1'\): image is not valid base64",
        ),
        (
            ["index", "question", "answer", "image"],
            [["1", "Q", "a", base64.b64encode(b"text").decode()]],
            r"line 2 .*not a readable image",
        ),
        (
            ["index", "question", "answer", "image"],
            [["1", "Q", "a", "7"]],
            r"refers to row index '7', which is not in the file",
        ),
        (
            ["index", "question", "answer", "image"],
            [["1", "Q", "a", "2"], ["2", "Q", "a", "1"]],
            r"line 2 .*holds no image of its own",
        ),
        (
            ["index", "question", "answer", "image_path"],
            [["1", "Q", "a", "missing.png"]],
            r"missing.png' does not exist",
        ),
        (["index", "question", "answer", "image"], [["1", "Q", "a", "[1, 2"]], r"not a list literal"),
    ],
)
def test_tsv_errors_name_file_and_line(tmp_path, header, rows, message):
    path = write_tsv(tmp_path / "bad.tsv", header, rows)
    with pytest.raises(InputError, match=message) as caught:
        read_tsv(path)
    assert str(path) in str(caught.value)


def test_tsv_empty_file(tmp_path):
    (tmp_path / "e.tsv").write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="empty file"):
        read_tsv(tmp_path / "e.tsv")


# --- JSONL ---------------------------------------------------------------------------------------------------------


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl_every_field(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    data_uri = "data:image/png;base64," + b64()
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "id": 1,
                "question": "Which?",
                "answer": "dog",
                "image": "a.png",
                "category": "animals",
                "options": ["cat", "dog"],
            },
            {
                "id": "q2",
                "question": "How tall?",
                "answer": 12.5,
                "images": ["a.png", data_uri],
                "metric": "numeric",
                "tolerance": 0.05,
            },
            {"id": "q3", "question": "Where?", "answer": [[1, 2, 3, 4]], "metric": "iou"},
            {
                "id": "q4",
                "question": "Title?",
                "answer": ["Foo", "Foo Bar"],
                "metric": "anls",
                "prompt": "Read the title.",
                "meta": {"src": "x"},
            },
            {"id": "q5", "question": "Explain.", "metric": "judge", "hint": "a meme"},
            {"id": "q6", "question": "Is it red?", "answer": "no"},
        ],
    )
    items = read_jsonl(path)
    assert items[0].id == "1" and items[0].metric == "mcq" and items[0].answers == ("B",)
    assert items[0].options == {"A": "cat", "B": "dog"} and items[0].images == (tmp_path / "a.png",)
    assert items[1].answers == ("12.5",) and items[1].tolerance == 0.05 and len(items[1].load_images()) == 2
    assert items[2].answers == ("[[1, 2, 3, 4]]",)
    assert (
        items[3].answers == ("Foo", "Foo Bar")
        and items[3].prompt == "Read the title."
        and items[3].meta == {"src": "x"}
    )
    assert items[4].answers == () and items[4].prompt == "a meme\nExplain."
    assert items[5].metric == "yorn"


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": 1, "question": "Q"', "line 2: not valid JSON"),
        ("[1, 2]", "line 2: each line must be a JSON object"),
        ({"question": "Q"}, "line 2: 'id' must be"),
        ({"id": "a", "question": "Q"}, "line 2: duplicate id 'a'"),
        ({"id": 2, "question": 5}, "'question' must be a string"),
        ({"id": 2, "question": "Q", "metric": "bleu"}, "unknown metric 'bleu'"),
        ({"id": 2, "question": "Q", "answer": True}, "'answer' must be"),
        ({"id": 2, "question": "Q", "image": "nope.png"}, "nope.png' does not exist"),
        ({"id": 2, "question": "Q", "image": "a", "images": ["b"]}, "not both"),
        ({"id": 2, "question": "Q", "options": {"a": "x"}}, "not a capital letter"),
        ({"id": 2, "question": "Q", "tolerance": -1}, "'tolerance' must be"),
        ({"id": 2, "question": "Q", "answer": "Z", "options": ["x", "y"]}, "neither an option letter"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "question": "fine"}, line])
    with pytest.raises(InputError, match=message) as caught:
        read_jsonl(path)
    assert str(path) in str(caught.value)


def test_jsonl_skips_blank_lines_and_load_items_dispatches(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('\n{"id": 1, "question": "Q", "answer": "a"}\n\n', encoding="utf-8")
    assert [i.id for i in load_items(path)] == ["1"]
    with pytest.raises(InputError, match="unknown data format"):
        (tmp_path / "d.csv").write_text("x", encoding="utf-8")
        load_items(tmp_path / "d.csv")
    with pytest.raises(InputError, match="no such data file"):
        load_items(tmp_path / "missing.tsv")


def test_byte_order_marks_and_line_separators_inside_json(tmp_path):
    (tmp_path / "bom.tsv").write_text("\ufeffindex\tquestion\tanswer\n1\tQ\ta\n", encoding="utf-8")
    assert read_tsv(tmp_path / "bom.tsv")[0].id == "1"
    (tmp_path / "bom.jsonl").write_text(
        '\ufeff{"id": 1, "question": "a\u2028b"}\n{"id": 2, "question": "c"}\n', encoding="utf-8"
    )
    assert [i.question for i in read_jsonl(tmp_path / "bom.jsonl")] == ["a\u2028b", "c"]


def test_files_that_are_not_utf8(tmp_path):
    (tmp_path / "latin.tsv").write_bytes("index\tquestion\tanswer\n1\tcaf\xe9\ta\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_tsv(tmp_path / "latin.tsv")
    (tmp_path / "latin.jsonl").write_bytes('{"id": 1, "question": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_jsonl(tmp_path / "latin.jsonl")
