"""SFT data (docs/sft.md): meta file, lazy JSONL index, bad lines, tokenisation and label masking
with a real Qwen2 tokenizer, multi-image tile budgets, video and text-only samples.

References for masking are written here from the official rule (docs/sft.md#masking: segment strings, masking), not from
the package. Tiles are 28 px with 4 tokens each to keep sequences short; the rules do not depend on it.
"""

import json
import logging
import os
import tracemalloc

import numpy as np
import pytest
import torch

from internvl.data.sft import (
    LineIndex,
    SampleSettings,
    SupervisedDataset,
    build_datasets,
    dataset_weights,
    read_meta,
)
from internvl.errors import InputError
from internvl.inputs.image import count_tiles, dummy_tile
from internvl.inputs.prompt import IGNORE_INDEX, ConversationEncoder
from internvl.inputs.template import get_template
from tests.inputs_fixtures import (
    decoded_frame_ids,
    make_image,
    write_clip,
)

TILE = 28
TOKENS_PER_TILE = 4
SETTINGS = SampleSettings(num_image_token=TOKENS_PER_TILE, tile_size=TILE, max_tiles=6)
SYS_2_5 = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
SYS_LEGACY = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)
IMG_START, IMG_END, IMG_CONTEXT = 151665, 151666, 151667


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    make_image(90, 30, seed=1).save(root / "wide.png")  # aspect 3
    make_image(40, 60, seed=2).save(root / "tall.png")
    make_image(20, 20, seed=3).save(root / "small.png")
    return root


def human(value):
    return {"from": "human", "value": value}


def gpt(value):
    return {"from": "gpt", "value": value}


def write_dataset(folder, records, name="d", settings=SETTINGS, tokenizer=None, **meta):
    """Write `records` (dicts, or raw strings written as they are) as JSONL + meta; return the dataset."""
    annotation = folder / f"{name}.jsonl"
    annotation.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records)
    )
    entry = {
        "root": str(meta.pop("root", folder)),
        "annotation": str(annotation),
        "repeat_time": 1,
        "data_augment": False,
    }
    entry.update(meta)
    (folder / "meta.json").write_text(json.dumps({name: entry}))
    return build_datasets(folder / "meta.json", tokenizer, settings)[0]


def supervised_spans(tokenizer, sample):
    """Decoded runs of consecutive supervised tokens."""
    spans, current = [], []
    for token, label in zip(sample.input_ids.tolist(), sample.labels.tolist()):
        if label != IGNORE_INDEX:
            assert label == token  # labels are the tokens themselves (the shift happens in the loss)
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


def block(tiles):
    return "<img>" + "<IMG_CONTEXT>" * (TOKENS_PER_TILE * tiles) + "</img>"


# ------------------------------------------------------------------------------------ meta


def test_read_meta_fields_and_defaults(tmp_path):
    meta = {
        "a": {"root": "/data/a", "annotation": "a.jsonl", "repeat_time": 0.5, "data_augment": True, "length": 10},
        "b": {"root": "", "annotation": "b.jsonl", "repeat_time": 3, "data_augment": False, "max_dynamic_patch": 12},
    }
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    a, b = read_meta(tmp_path / "meta.json")
    assert (a.name, a.root, a.repeat_time, a.data_augment, a.max_dynamic_patch, a.length) == (
        "a",
        "/data/a",
        0.5,
        True,
        None,
        10,
    )
    assert (b.name, b.repeat_time, b.max_dynamic_patch) == ("b", 3.0, 12)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"root": "", "annotation": "a.json", "repeat_time": 1}, "must be a .jsonl file"),
        ({"root": "", "annotation": "a.jsonl", "repeat_time": 1.5}, "whole number"),
        ({"root": "", "annotation": "a.jsonl", "repeat_time": -1}, "repeat_time"),
        ({"annotation": "a.jsonl", "repeat_time": 1}, "'root'"),
        ({"root": "", "annotation": "a.jsonl", "max_dynamic_patch": 0}, "max_dynamic_patch"),
    ],
)
def test_read_meta_rejects_bad_entries(tmp_path, entry, message):
    (tmp_path / "meta.json").write_text(json.dumps({"x": entry}))
    with pytest.raises(InputError, match=message):
        read_meta(tmp_path / "meta.json")


def test_read_meta_bad_json_names_file_and_line(tmp_path):
    (tmp_path / "meta.json").write_text('{\n "x": {"root": ""\n')
    with pytest.raises(InputError, match=rf"{tmp_path / 'meta.json'}:\d+: meta file is not valid JSON"):
        read_meta(tmp_path / "meta.json")


def test_repeat_time_keeps_a_prefix_or_repeats(tmp_path, qwen2_tokenizer):
    records = [{"conversations": [human(f"q{k}"), gpt(f"a{k}")]} for k in range(10)]
    ds = write_dataset(tmp_path, records, tokenizer=qwen2_tokenizer, repeat_time=0.35)
    assert len(ds) == 3
    assert [ds.where(i).rsplit(":", 1)[1] for i in range(3)] == ["1", "2", "3"]
    ds = write_dataset(tmp_path, records, tokenizer=qwen2_tokenizer, repeat_time=2)
    assert len(ds) == 20
    assert ds.where(13) == ds.where(3)
    assert torch.equal(ds[13].input_ids, ds[3].input_ids)
    assert dataset_weights([ds]) == [20.0] and dataset_weights([ds], resampling=True) == [pytest.approx(20**0.5)]


# ------------------------------------------------------------------------------ lazy index


def test_line_index_streams_a_large_file_with_little_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    n = 200_000
    filler = "x" * 120
    lines = [f'{{"id": {k}, "conversations": [{{"from": "human", "value": "{filler}"}}]}}' for k in range(n)]
    lines[10] += "\r"  # CRLF line endings are fine
    text = (
        "\n".join(lines[:5]) + "\n\n\r\n" + "\n".join(lines[5:]) + "\n"
    )  # one empty and one CR-only line after line 5
    path.write_text(text)
    size = os.path.getsize(path)
    tracemalloc.start()
    index = LineIndex(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size > 25e6 and peak < 10e6, (size, peak)  # the file is never held: 16 bytes per line + one chunk
    assert len(index) == n
    rng = np.random.default_rng(0)
    for k in [0, 4, 5, 10, n - 1, *rng.integers(0, n, 20).tolist()]:
        assert json.loads(index.read(k))["id"] == k
        assert index.line_number(k) == (k + 1 if k < 5 else k + 3)


def test_line_index_without_final_newline(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}')
    index = LineIndex(path)
    assert len(index) == 2 and json.loads(index.read(1)) == {"a": 2} and index.line_number(1) == 3


# ------------------------------------------------------------------------------ bad lines

GOOD = {"conversations": [human("Hi"), gpt("Hello")]}
BAD_LINES = [
    ('{"conversations": [', "not valid JSON"),
    ('["a list"]', "must be a JSON object"),
    ('{"conversations": [{"from": "human", "value": "Hi \\ud800"}, {"from": "gpt", "value": "x"}]}', "invalid Unicode"),
    ("[" * 50_000 + "]" * 50_000, "nested too deeply"),
    ({"image": "wide.png"}, "missing 'conversations'"),
    ({"conversations": [{"from": "user", "value": "Hi"}, gpt("Hello")]}, "unknown role 'user'"),
    (
        {"conversations": [human("Hi"), {"from": "system", "value": "S"}, gpt("Hello")]},
        "system turn may only come first",
    ),
    ({"conversations": [human("Hi")]}, "at least one 'human' and one 'gpt'"),
    ({"conversations": [human("Hi"), {"from": "gpt", "value": 3}]}, "string 'value'"),
    (
        {"image": ["wide.png", "tall.png"], "conversations": [human("<image> only one"), gpt("x")]},
        "1 <image> placeholder",
    ),
    ({"image": "wide.png", "conversations": [human("<image><image>"), gpt("x")]}, "2 <image> placeholder"),
    ({"conversations": [human("<image> but no image"), gpt("x")]}, "1 <image> placeholder"),
    ({"image": "missing.png", "conversations": [human("<image>"), gpt("x")]}, "no such image file"),
    (
        {"image": "wide.png", "conversations": [human("<IMG_CONTEXT> typed by hand"), gpt("x")]},
        "must not contain these tokens",
    ),
]


@pytest.fixture()
def bad_dataset(tmp_path, media, qwen2_tokenizer):
    def build(on_bad_line):
        settings = SampleSettings(num_image_token=TOKENS_PER_TILE, tile_size=TILE, on_bad_line=on_bad_line)
        records = [GOOD] + [line for line, _ in BAD_LINES] + [GOOD]
        return write_dataset(tmp_path, records, tokenizer=qwen2_tokenizer, settings=settings, root=media)

    return build


def test_bad_lines_raise_with_file_and_line(bad_dataset):
    ds = bad_dataset("error")
    annotation = ds.spec.annotation
    assert ds[0].num_tokens > 0
    for k, (_, message) in enumerate(BAD_LINES, start=1):
        with pytest.raises(InputError) as info:
            ds[k]
        assert str(info.value).startswith(f"{annotation}:{k + 1}: "), str(info.value)
        assert message in str(info.value)
    with pytest.raises(InputError, match=f"{annotation}:2: "):
        list(ds.iter_shard(shuffle=False))


def test_bad_lines_are_skipped_logged_and_counted(bad_dataset, caplog):
    ds = bad_dataset("skip")
    annotation = ds.spec.annotation
    with caplog.at_level(logging.WARNING, logger="internvl.data.sft"):
        sample = ds[1]  # bad: the next usable line is returned instead
    assert sample.sources == [f"{annotation}:{len(BAD_LINES) + 2}"]
    assert ds.bad_lines == len(BAD_LINES)
    assert f"{annotation}:2: not valid JSON" in caplog.text and f"{annotation}:{len(BAD_LINES) + 1}: " in caplog.text
    ds.bad_lines = 0
    samples = list(ds.iter_shard(shuffle=False))
    assert [s.sources[0].rsplit(":", 1)[1] for s in samples] == ["1", str(len(BAD_LINES) + 2)]
    assert ds.bad_lines == len(BAD_LINES)


def test_truncation_that_cuts_an_image_is_a_bad_line(tmp_path, media, qwen2_tokenizer):
    record = {
        "image": "wide.png",
        "conversations": [human("Look at this: <image>\nDescribe it in detail."), gpt("A wide picture " * 10)],
    }
    settings = SampleSettings(num_image_token=TOKENS_PER_TILE, tile_size=TILE, max_length=60)
    ds = write_dataset(tmp_path, [record], tokenizer=qwen2_tokenizer, settings=settings, root=media)
    with pytest.raises(InputError, match=r"d.jsonl:1: .*max_length=60 would cut image tokens"):
        ds[0]
    full = SupervisedDataset(ds.spec, qwen2_tokenizer, SampleSettings(num_image_token=TOKENS_PER_TILE, tile_size=TILE))[
        0
    ]
    image_end = full.input_ids.tolist().index(IMG_END)
    cut = SampleSettings(num_image_token=TOKENS_PER_TILE, tile_size=TILE, max_length=full.num_tokens - 5)
    sample = SupervisedDataset(ds.spec, qwen2_tokenizer, cut)[0]
    assert sample.num_tokens == full.num_tokens - 5 > image_end
    assert torch.equal(sample.input_ids, full.input_ids[:-5]) and torch.equal(sample.labels, full.labels[:-5])


# ------------------------------------------------------------------------------ masking


def reference_internvl2_5(tokenizer, system, turns):
    """`preprocess_internvl2_5` (docs/sft.md#masking) literally: segments tokenised apart; assistant: mask len(tok(prefix)) tokens and the last."""
    segments = [("system", f"<|im_start|>system\n{system}<|im_end|>\n")]
    for role, value in turns:
        name = "user" if role == "human" else "assistant"
        segments.append((role, f"<|im_start|>{name}\n{value}<|im_end|>\n"))
    ignore_len = len(tokenizer("<|im_start|>assistant\n").input_ids)
    ids, labels = [], []
    for role, text in segments:
        tokens = tokenizer(text).input_ids
        ids += tokens
        labels += [-100] * len(tokens) if role != "gpt" else [-100] * ignore_len + tokens[ignore_len:-1] + [-100]
    return ids, labels


def test_internvl2_5_masking_multi_turn_multi_image(tmp_path, media, qwen2_tokenizer):
    answers = ["The left one is wider.", "  Both have noise,\nsee the pixels. ", "三个。"]
    record = {
        "image": ["wide.png", "tall.png", "small.png"],
        "conversations": [
            human("Image-1: <image>\nImage-2: <image>\nWhich is wider?"),
            gpt(answers[0]),
            human("And what do they share?"),
            gpt(answers[1]),
            human("Now this one: <image>\nHow many images so far?"),
            gpt(answers[2]),
        ],
    }
    sample = write_dataset(tmp_path, [record], tokenizer=qwen2_tokenizer, root=media)[0]
    assert supervised_spans(qwen2_tokenizer, sample) == [a + "<|im_end|>" for a in answers]

    budget = max(1, 6 // 3)  # per-image tile budget of a 3-image sample
    tiles = [count_tiles(w, h, max_tiles=budget, tile_size=TILE) for w, h in [(90, 30), (40, 60), (20, 20)]]
    assert tiles == [3, 3, 1] and sample.num_tiles == sum(tiles) and bool(sample.image_flags.all())
    turns = [
        ("human", f"Image-1: {block(tiles[0])}\nImage-2: {block(tiles[1])}\nWhich is wider?"),
        ("gpt", answers[0]),
        ("human", "And what do they share?"),
        ("gpt", answers[1]),
        ("human", f"Now this one: {block(tiles[2])}\nHow many images so far?"),
        ("gpt", answers[2]),
    ]
    ids, labels = reference_internvl2_5(qwen2_tokenizer, SYS_2_5, turns)
    assert sample.input_ids.tolist() == ids
    assert sample.labels.tolist() == labels
    # every tile is tied to its image's <img> token
    starts = [k for k, t in enumerate(ids) if t == IMG_START]
    assert sample.tile_token_index.tolist() == [starts[0]] * 3 + [starts[1]] * 3 + [starts[2]]


def test_internvl2_5_system_turn_and_default(tmp_path, qwen2_tokenizer):
    records = [
        {"conversations": [{"from": "system", "value": "You are terse."}, human("Hi"), gpt("Hey")]},
        {"conversations": [human("Hi"), gpt("Hey")]},
    ]
    ds = write_dataset(tmp_path, records, tokenizer=qwen2_tokenizer)
    text0, text1 = (qwen2_tokenizer.decode(ds[i].input_ids) for i in range(2))
    assert text0.startswith("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi")
    assert text1.startswith(f"<|im_start|>system\n{SYS_2_5}<|im_end|>\n<|im_start|>user\nHi")
    assert supervised_spans(qwen2_tokenizer, ds[0]) == ["Hey<|im_end|>"]


def test_prefix_merging_with_the_answer_is_not_mislabelled(tmp_path, qwen2_tokenizer):
    """An answer starting with newlines merges with the prefix's `\\n` into one BPE token; the official
    rule would mask that token (losing the answer's newlines); ours tokenises the parts apart."""
    merged = qwen2_tokenizer("<|im_start|>assistant\n\n\nHello<|im_end|>\n").input_ids
    assert merged[:3] != qwen2_tokenizer("<|im_start|>assistant\n").input_ids  # the merge really happens
    sample = write_dataset(tmp_path, [{"conversations": [human("Hi"), gpt("\n\nHello")]}], tokenizer=qwen2_tokenizer)[0]
    assert supervised_spans(qwen2_tokenizer, sample) == ["\n\nHello<|im_end|>"]
    assert qwen2_tokenizer.decode(sample.input_ids).endswith("<|im_start|>assistant\n\n\nHello<|im_end|>\n")


LEGACY = {
    # name: (system block, user prefix, assistant prefix, sep)
    "Hermes-2": ("<|im_start|>system\n{}", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
    "internlm2-chat": ("<|im_start|>system\n{}", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
    "phi3-chat": ("<|system|>\n{}", "<|user|>\n", "<|assistant|>\n", "<|end|>"),
}


@pytest.mark.parametrize("template", list(LEGACY))
def test_legacy_templates_supervise_answer_and_end_token(tmp_path, media, qwen2_tokenizer, template):
    system, user, assistant, sep = LEGACY[template]
    answers = ["It is wide.", " Yes, quite. "]
    record = {
        "image": "wide.png",
        "conversations": [human("<image>\nWhat shape?"), gpt(answers[0]), human("Sure?"), gpt(answers[1])],
    }
    settings = SampleSettings(template=template, num_image_token=TOKENS_PER_TILE, tile_size=TILE, max_tiles=6)
    sample = write_dataset(tmp_path, [record], tokenizer=qwen2_tokenizer, settings=settings, root=media)[0]
    strip = template == "internlm2-chat"  # the official preprocess_internlm strips every value
    expected_answers = [a.strip() if strip else a for a in answers]
    assert supervised_spans(qwen2_tokenizer, sample) == [a + sep for a in expected_answers]
    tiles = count_tiles(90, 30, max_tiles=6, tile_size=TILE)
    prompt = (
        system.format(SYS_LEGACY) + sep
        + user + f"{block(tiles)}\nWhat shape?" + sep + assistant + expected_answers[0] + sep
        + user + "Sure?" + sep + assistant + expected_answers[1] + sep
    )  # fmt: skip
    assert qwen2_tokenizer.decode(sample.input_ids) == prompt


class BosTokenizer:
    """The Qwen2 tokenizer made to add a BOS like InternLM2's (`add_bos_token`), with a stand-in BOS."""

    add_bos_token = True
    bos_token = "<|object_ref_start|>"

    def __init__(self, inner):
        self.inner = inner
        self.bos_token_id = inner.convert_tokens_to_ids(self.bos_token)
        self.pad_token_id = inner.pad_token_id

    def __call__(self, texts, add_special_tokens=True, **kwargs):
        out = self.inner(texts, add_special_tokens=False, **kwargs)
        if add_special_tokens:
            if isinstance(texts, str):
                out["input_ids"] = [self.bos_token_id] + out["input_ids"]
            else:
                out["input_ids"] = [[self.bos_token_id] + ids for ids in out["input_ids"]]
        return out

    def encode(self, text, add_special_tokens=True):
        return self(text, add_special_tokens=add_special_tokens)["input_ids"]

    def convert_tokens_to_ids(self, token):
        return self.inner.convert_tokens_to_ids(token)

    @property
    def added_tokens_decoder(self):
        return self.inner.added_tokens_decoder

    def decode(self, ids):
        return self.inner.decode(ids)


def test_bos_tokenizer_gets_exactly_one_bos(qwen2_tokenizer):
    """`preprocess_internvl2_5` with a BOS tokenizer (docs/sft.md#masking): BOS string prepended to the first segment, every segment tokenised with its
    BOS, the first token of each dropped, prefix length minus one."""
    tokenizer = BosTokenizer(qwen2_tokenizer)
    turns = [("human", "Hi"), ("gpt", "Hello there."), ("human", "Again?"), ("gpt", "Yes.")]
    ids, labels = ConversationEncoder(tokenizer, get_template("internvl2_5")).encode(SYS_2_5, turns)

    segments = [f"<|im_start|>system\n{SYS_2_5}<|im_end|>\n"]
    segments += [f"<|im_start|>{'user' if r == 'human' else 'assistant'}\n{v}<|im_end|>\n" for r, v in turns]
    segments[0] = tokenizer.bos_token + segments[0]
    tokenized = [tokenizer(s)["input_ids"][1:] for s in segments]
    ignore_len = len(tokenizer("<|im_start|>assistant\n")["input_ids"]) - 1
    ref_ids, ref_labels = [], []
    for (role, _), tokens in zip([("system", "")] + turns, tokenized):
        ref_ids += tokens
        ref_labels += [-100] * len(tokens) if role != "gpt" else [-100] * ignore_len + tokens[ignore_len:-1] + [-100]
    assert ids == ref_ids and labels == ref_labels
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


# ------------------------------------------------------------------------------ media


def test_single_image_budget_and_meta_override(tmp_path, media, qwen2_tokenizer):
    record = {"image": "wide.png", "conversations": [human("Describe."), gpt("Wide.")]}
    sample = write_dataset(tmp_path, [record], tokenizer=qwen2_tokenizer, root=media)[0]
    assert sample.num_tiles == count_tiles(90, 30, max_tiles=6, tile_size=TILE) == 4
    text = qwen2_tokenizer.decode(sample.input_ids)
    assert f"<|im_start|>user\n{block(4)}\nDescribe.<|im_end|>" in text  # `<image>\n` put in front
    sample = write_dataset(tmp_path, [record], tokenizer=qwen2_tokenizer, root=media, max_dynamic_patch=1)[0]
    assert sample.num_tiles == 1
    assert int((sample.input_ids == IMG_CONTEXT).sum()) == TOKENS_PER_TILE


def test_data_augment_is_seeded(tmp_path, media, qwen2_tokenizer):
    record = {"image": "tall.png", "conversations": [human("<image>"), gpt("Tall.")]}
    plain = write_dataset(tmp_path, [record], tokenizer=qwen2_tokenizer, root=media)[0]
    ds = write_dataset(tmp_path, [record], tokenizer=qwen2_tokenizer, root=media, data_augment=True)
    a, b = ds[0], ds[0]
    assert torch.equal(a.pixel_values, b.pixel_values)
    assert not torch.equal(a.pixel_values, plain.pixel_values)
    assert (a.pixel_values - plain.pixel_values).abs().mean() < 0.5  # a JPEG re-encode, not a new image


def test_pure_text_gets_one_dummy_tile(tmp_path, qwen2_tokenizer):
    sample = write_dataset(tmp_path, [GOOD], tokenizer=qwen2_tokenizer)[0]
    assert torch.equal(sample.pixel_values, dummy_tile(TILE))
    assert sample.image_flags.tolist() == [0]
    assert not any(t in sample.input_ids.tolist() for t in (IMG_START, IMG_END, IMG_CONTEXT))


def test_video_sample_frames_and_prompt(tmp_path, qwen2_tokenizer):
    pytest.importorskip("av", reason="video samples need PyAV (pip install av)")
    write_clip(tmp_path / "clip.mkv", n_frames=30, fps=10)
    settings = SampleSettings(num_image_token=TOKENS_PER_TILE, tile_size=TILE, min_num_frame=4, max_num_frame=4)
    records = [
        {"video": "clip.mkv", "conversations": [human("<video>\nWhat happens?"), gpt("Colours change.")]},
        {"video": "clip.mkv", "clip": [1.0, 2.0], "conversations": [human("What happens?"), gpt("Less.")]},
    ]
    ds = write_dataset(tmp_path, records, tokenizer=qwen2_tokenizer, settings=settings)
    for i, answer in enumerate(["Colours change.", "Less."]):
        sample = ds[i]
        assert sample.num_tiles == 4 and sample.image_flags.tolist() == [1] * 4
        frames = "".join(f"Frame-{k}: {block(1)}\n" for k in range(1, 5))
        assert f"<|im_start|>user\n{frames}What happens?<|im_end|>" in qwen2_tokenizer.decode(sample.input_ids)
        assert supervised_spans(qwen2_tokenizer, sample) == [answer + "<|im_end|>"]
    assert all(10 <= k <= 20 for k in decoded_frame_ids(ds[1].pixel_values))  # clip [1 s, 2 s] at 10 fps
    varied = SampleSettings(num_image_token=TOKENS_PER_TILE, tile_size=TILE, min_num_frame=2, max_num_frame=6)
    counts = {SupervisedDataset(ds.spec, qwen2_tokenizer, varied)[0].num_tiles for _ in range(2)}
    assert len(counts) == 1 and 2 <= counts.pop() <= 6  # drawn per sample, but seeded
