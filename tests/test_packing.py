"""The packed dataset (docs/sft.md#packing), loss weights (docs/sft.md#loss-weights) and the batch contract of `internvl.data.collate`.

Packing rules are tested on synthetic samples (token ids spelled out, 1x1 "tiles"); sharding,
workers and determinism on real `SupervisedDataset`s with the Qwen2 tokenizer; the batch contract
end to end against the model (a packed row gives each conversation its own logits).
"""

import dataclasses
import itertools
import json
import logging
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from internvl.data.collate import Collator, len2weight, loss_weights, position_ids_from_documents
from internvl.data.packing import PackedDataset, Packer, PackingSettings, concat, split_buffer
from internvl.data.sft import EncodedSample, SampleSettings, build_datasets
from internvl.errors import ConfigError
from internvl.inputs.prompt import IGNORE_INDEX, ImageTokenIds
from tests.inputs_fixtures import make_image

IDS = ImageTokenIds(start=151665, context=151667, end=151666)
T = 4  # tokens per tile in these tests


def make_sample(tag, tiles_per_image=(), prompt=5, answer=5, between=2, ids=IDS, per_tile=T, tile_shape=(3, 1, 1)):
    """Prompt text, then each image block followed by `between` text tokens, then a supervised answer.

    Text tokens are 1000 + tag (prompt) and 2000 + tag (answer), so every sample's tokens are traceable;
    a text-only sample gets one dummy tile (flag 0)."""
    tokens = [1000 + tag] * prompt
    anchors = []
    for tiles in tiles_per_image:
        anchors += [len(tokens)] * tiles
        tokens += [ids.start] + [ids.context] * (per_tile * tiles) + [ids.end] + [1000 + tag] * between
    labels = [IGNORE_INDEX] * len(tokens) + [2000 + tag] * answer
    tokens += [2000 + tag] * answer
    n_tiles = sum(tiles_per_image)
    return EncodedSample(
        input_ids=torch.tensor(tokens),
        labels=torch.tensor(labels),
        pixel_values=torch.full((max(n_tiles, 1), *tile_shape), float(tag)),
        image_flags=torch.ones(n_tiles, dtype=torch.long) if n_tiles else torch.zeros(1, dtype=torch.long),
        document_ids=torch.zeros(len(tokens), dtype=torch.long),
        tile_token_index=torch.tensor(anchors if n_tiles else [0], dtype=torch.long),
        sources=[f"s{tag}"],
    )


def check_row(pack, max_tokens=None, max_tiles=None, ids=IDS, per_tile=T):
    """Invariants every emitted row keeps."""
    assert pack.num_tokens > 0
    if max_tokens is not None:
        assert pack.num_tokens <= max_tokens
    if max_tiles is not None:
        assert pack.num_tiles <= max_tiles
    docs = pack.document_ids
    assert docs[0] == 0 and bool(((docs[1:] - docs[:-1]) >= 0).all()) and bool(((docs[1:] - docs[:-1]) <= 1).all())
    assert len(pack.sources) == pack.num_documents
    input_ids = pack.input_ids
    starts = torch.nonzero(input_ids == ids.start).flatten()
    assert len(starts) == int((input_ids == ids.end).sum())
    real = pack.image_flags == 1
    assert int((input_ids == ids.context).sum()) == per_tile * int(real.sum())  # tiles match image tokens
    assert bool((input_ids[pack.tile_token_index[real]] == ids.start).all())  # each real tile at its <img>
    assert bool((pack.tile_token_index[1:] >= pack.tile_token_index[:-1]).all())  # tiles in token order
    for anchor in pack.tile_token_index[~real].tolist():  # dummy tiles at the start of a text-only document
        assert anchor == 0 or docs[anchor] != docs[anchor - 1]


def random_samples(n, seed=0, long_every=25):
    rng = np.random.default_rng(seed)
    samples = []
    for tag in range(n):
        if long_every and tag % long_every == 7:  # longer than a pack: cut at image boundaries
            images = [1] * int(rng.integers(8, 14))
            samples.append(make_sample(tag, images, prompt=int(rng.integers(5, 40)), answer=int(rng.integers(20, 80))))
        elif rng.random() < 0.2:
            samples.append(make_sample(tag, (), prompt=int(rng.integers(5, 60)), answer=int(rng.integers(1, 60))))
        else:
            images = rng.integers(1, 5, size=int(rng.integers(1, 3))).tolist()
            samples.append(make_sample(tag, images, prompt=int(rng.integers(3, 40)), answer=int(rng.integers(1, 40))))
    return samples


# ----------------------------------------------------------------------------------- the packer


@pytest.mark.parametrize("evict", ["most_tiles", "fullest"])
def test_packer_invariants_on_a_random_mix(evict):
    settings = PackingSettings(num_images_expected=12, max_packed_tokens=128, max_buffer_size=4, evict=evict)
    packer = Packer(settings, IDS)
    samples = random_samples(300)
    packs = [p for s in samples for p in packer.add(s)] + packer.flush()
    for pack in packs:
        check_row(pack, 128, 12)
    stats = packer.stats
    assert stats.samples == 300 and stats.packs == len(packs)
    assert stats.tokens_in == sum(s.num_tokens for s in samples) == stats.tokens_out + stats.tokens_dropped
    assert stats.tokens_out == sum(p.num_tokens for p in packs)

    # Samples that fit are placed whole, exactly once; longer ones appear as ordered, disjoint pieces.
    pieces = {}
    for pack in packs:
        for d, source in enumerate(pack.sources):
            pieces.setdefault(source, []).append(pack.input_ids[pack.document_ids == d])
    for sample in samples:
        (source,) = sample.sources
        if sample.num_tokens <= 128:
            assert len(pieces[source]) == 1 and torch.equal(pieces[source][0], sample.input_ids), source
        else:
            assert stats.tokens_dropped > 0
            assert sum(len(p) for p in pieces.get(source, [])) <= sample.num_tokens
    assert sum(1 for s in samples if s.num_tokens > 128) >= 5


def test_find_buffer_takes_the_first_fit_in_descending_tile_order():
    settings = PackingSettings(num_images_expected=10, max_packed_tokens=100, max_buffer_size=10)
    packer = Packer(settings, IDS)
    a = make_sample(0, [5], prompt=20, answer=16)  # 5 tiles, 60 tokens
    b = make_sample(1, [3], prompt=28, answer=16)  # 3 tiles, 60 tokens: does not fit next to a
    c = make_sample(2, [1], prompt=10, answer=12)  # 1 tile, 30 tokens: fits a (first in order)
    d = make_sample(3, [4], prompt=1, answer=1)  # 4 tiles, 22 tokens: a+c has 6 tiles / 90 tokens -> b
    assert [s.num_tokens for s in (a, b, c, d)] == [60, 60, 30, 22]
    assert packer.add(a) == [] and packer.add(b) == []
    assert [buf.sources for buf in packer.buffers] == [["s0"], ["s1"]]
    assert packer.add(c) == []
    assert [buf.sources for buf in packer.buffers] == [["s0", "s2"], ["s1"]]
    assert packer.add(d) == []
    assert [buf.sources for buf in packer.buffers] == [["s1", "s3"], ["s0", "s2"]]  # 7 tiles before 6
    e = make_sample(4, [3], prompt=1, answer=1)  # 3 tiles, 18 tokens: s1+s3 reaches exactly 10 tiles -> emitted
    (pack,) = packer.add(e)
    assert pack.sources == ["s1", "s3", "s4"] and pack.num_tiles == 10
    assert pack.document_ids.unique_consecutive().tolist() == [0, 1, 2]


def test_a_pack_of_exactly_max_tokens_is_emitted_at_once():
    packer = Packer(PackingSettings(num_images_expected=10, max_packed_tokens=100, max_buffer_size=10), IDS)
    assert packer.add(make_sample(0, [1], prompt=40, answer=12)) == []  # 60 tokens
    (pack,) = packer.add(make_sample(1, [1], prompt=20, answer=12))  # + 40 = 100
    assert pack.num_tokens == 100 and packer.buffers == []


def test_too_many_open_buffers_emit_by_tiles_or_fullness():
    def run(evict):
        packer = Packer(
            PackingSettings(num_images_expected=20, max_packed_tokens=100, max_buffer_size=2, evict=evict), IDS
        )
        out = []
        samples = make_sample(0, [3], 10, 34), make_sample(1, [1], 10, 78), make_sample(2, [2], 10, 40)
        assert [s.num_tokens for s in samples] == [60, 96, 62]  # no two fit together
        for s in samples:
            out += packer.add(s)
        return out, packer

    out, packer = run("most_tiles")
    assert [p.sources for p in out] == [["s0"]]  # the head: most tiles
    out, packer = run("fullest")
    assert [p.sources for p in out] == [["s1"]]  # 96 tokens: the fullest
    assert len(packer.buffers) == 2
    assert [p.sources for p in packer.flush()] == [["s0"], ["s2"]] and packer.buffers == []


def test_allow_overflow_merges_past_the_token_budget_then_cuts():
    def run(allow_overflow):
        settings = PackingSettings(
            num_images_expected=10, max_packed_tokens=100, max_buffer_size=2, allow_overflow=allow_overflow
        )
        packer = Packer(settings, IDS)
        out = packer.add(make_sample(0, [1], prompt=2, answer=50)) + packer.add(
            make_sample(1, [1], prompt=2, answer=50)
        )
        return out, packer

    out, packer = run(False)
    assert out == [] and len(packer.buffers) == 2
    (pack,), packer = run(True)  # 60 + 60 tokens merged, cut at 100 inside the 2nd answer; the rest is lost
    assert pack.num_tokens == 100 and pack.sources == ["s0", "s1"] and packer.buffers == []
    assert packer.stats.tokens_dropped == 20


def test_strict_mode_pads_tiles_and_oversized_samples_are_dropped_loudly(caplog):
    packer = Packer(PackingSettings(num_images_expected=6, max_packed_tokens=200, strict_mode=True), IDS)
    with caplog.at_level(logging.WARNING, logger="internvl.data.packing"):
        assert packer.add(make_sample(0, [7])) == []
    assert packer.stats.samples_too_many_tiles == 1 and "7 tiles" in caplog.text and "s0" in caplog.text
    packer.add(make_sample(1, [2]))
    (pack,) = packer.flush()
    assert pack.num_tiles == 6 and pack.image_flags.tolist() == [1, 1, 0, 0, 0, 0]
    assert bool((pack.pixel_values[2:] == 0).all())


def test_settings_are_checked():
    with pytest.raises(ConfigError):
        Packer(PackingSettings(evict="random"), IDS)
    with pytest.raises(ConfigError):
        Packer(PackingSettings(max_packed_tokens=0), IDS)


# ----------------------------------------------------------------------------------- split_buffer


def test_split_inside_an_image_cuts_before_it():
    # 5 prompt | <img> 2 tiles (10 tokens) | 2 text | <img> 1 tile (6) | 2 text | 5 answer  = 30 tokens
    sample = supervised(make_sample(0, [2, 1], prompt=5, answer=5))
    second_img = 5 + 10 + 2
    left, right = split_buffer(sample, 20, IDS)  # position 20 is inside the second image
    assert torch.equal(left.input_ids, sample.input_ids[:second_img])
    assert torch.equal(right.input_ids, sample.input_ids[second_img:])
    assert left.num_tiles == 2 and right.num_tiles == 1  # tiles follow their blocks (2 + 1, not 1 + 1)
    assert torch.equal(left.pixel_values, sample.pixel_values[:2]) and right.tile_token_index.tolist() == [0]


def test_split_inside_text_drops_text_up_to_the_next_image():
    sample = supervised(make_sample(0, [1, 1], prompt=5, answer=2, between=8))  # 5 | 6 | 8 | 6 | 8 | 2 = 35
    left, right = split_buffer(sample, 16, IDS)  # position 16 is text after the first image
    assert torch.equal(left.input_ids, sample.input_ids[:16]) and left.num_tiles == 1
    assert torch.equal(right.input_ids, sample.input_ids[19:]) and right.num_tiles == 1  # 16..18 lost
    assert right.tile_token_index.tolist() == [0]


def test_split_with_no_further_image_drops_the_rest():
    sample = make_sample(0, [1], prompt=5, answer=30)  # 5 | 6 | 2 | 30
    (left,) = split_buffer(sample, 20, IDS)
    assert left.num_tokens == 20


def test_split_drops_pieces_without_tiles_or_supervision():
    sample = make_sample(0, [1, 1], prompt=40, answer=3, between=0)  # 40 | 6 | 6 | 3
    (only,) = split_buffer(sample, 50, IDS)  # the cut is inside the 2nd image
    assert torch.equal(only.input_ids, sample.input_ids[46:])  # left (no supervised token) dropped
    text_first = make_sample(1, [1], prompt=0, answer=0, between=0)
    text_first = concat(make_sample(2, (), prompt=30, answer=5), text_first, make_sample(3, [1], 2, 5))
    pieces = split_buffer(supervised(text_first), 37, IDS)  # cut inside the 1st image: left = text only
    assert [p.sources for p in pieces] == [["s2"], ["s1", "s3"]]  # the left keeps its dummy tile: a tile
    assert pieces[0].image_flags.tolist() == [0]


def test_split_multi_document_buffer_renumbers_documents():
    packer_pieces = split_buffer(
        concat(make_sample(0, [1], 5, 5), make_sample(1, [1, 1], 5, 5, between=6), make_sample(2, [1], 5, 5)), 30, IDS
    )
    for piece in packer_pieces:
        check_row(piece, 30)
    assert packer_pieces[0].sources == ["s0", "s1"] and packer_pieces[-1].sources[-1] == "s2"


def supervised(sample):
    sample.labels = sample.input_ids.clone()
    return sample


# ----------------------------------------------------------------------------------- loss weights


def test_len2weight():
    n = torch.tensor([0, 1, 4, 9])
    assert len2weight(n, "token").tolist() == [0, 1, 1, 1]
    assert len2weight(n, "sample").tolist() == [0, 1, 0.25, pytest.approx(1 / 9)]
    assert len2weight(n, "square").tolist() == [0, 1, 0.5, pytest.approx(1 / 3)]
    with pytest.raises(ConfigError):
        len2weight(n, "mean")


def test_loss_weights_packed_and_plain_rows():
    x = IGNORE_INDEX
    labels = torch.tensor([[x, 5, 5, 5, 5, x, x, 7, x, x], [x, 1, 1, 1, 1, 1, 1, 1, 1, x]])
    documents = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 2, 2], [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]])
    w = loss_weights(labels, documents, "square")
    assert w[0].tolist() == [0, 0.5, 0.5, 0.5, 0.5, 0, 0, 1, 0, 0]
    assert w[1].tolist() == pytest.approx([0] + [1 / math.sqrt(8)] * 8 + [0])
    assert loss_weights(labels, documents, "token").tolist() == (labels != x).float().tolist()
    # With "sample", the weighted mean is the mean over documents of their mean token loss.
    ce = torch.rand(labels.shape)
    w = loss_weights(labels, documents, "sample")
    per_doc = [ce[0, 1:5].mean(), ce[0, 7], ce[1, 1:9].mean()]
    assert float((w * ce).sum() / w.sum()) == pytest.approx(float(sum(per_doc) / 3))


# ----------------------------------------------------------------------------------- collate


def test_collate_pads_and_keeps_the_contract():
    pack = concat(make_sample(0, [2], prompt=3, answer=4), make_sample(1, (), prompt=2, answer=3))
    plain = make_sample(2, [1], prompt=2, answer=2)
    batch = Collator(pad_id=151643, loss_reduction="sample")([pack, plain])
    assert set(batch) == {
        "input_ids", "labels", "loss_weight", "attention_mask", "position_ids", "document_ids", "pixel_values",
        "image_flags", "num_samples", "num_tokens", "num_padding_tokens", "num_supervised_tokens",
    }  # fmt: skip
    n0, n1 = pack.num_tokens, plain.num_tokens
    assert batch["input_ids"].shape == (2, n0) and n1 < n0
    assert batch["input_ids"][1, n1:].eq(151643).all() and batch["labels"][1, n1:].eq(IGNORE_INDEX).all()
    assert batch["attention_mask"].tolist() == [[1] * n0, [1] * n1 + [0] * (n0 - n1)]
    assert batch["loss_weight"][1, n1:].eq(0).all()
    assert batch["document_ids"][0].tolist() == pack.document_ids.tolist()
    assert batch["document_ids"][1].tolist() == [0] * n1 + [1] * (n0 - n1)  # padding: its own document
    first_len = int((pack.document_ids == 0).sum())
    assert batch["position_ids"][0].tolist() == list(range(first_len)) + list(range(n0 - first_len))
    assert batch["position_ids"][1].tolist() == list(range(n1)) + list(range(n0 - n1))
    assert torch.equal(batch["pixel_values"], torch.cat([pack.pixel_values, plain.pixel_values]))
    assert batch["image_flags"].tolist() == [1, 1, 0, 1]
    assert (batch["num_samples"], batch["num_tokens"], batch["num_padding_tokens"]) == (3, n0 + n1, n0 - n1)
    assert batch["num_supervised_tokens"] == 4 + 3 + 2
    assert batch["loss_weight"][0].sum().item() == pytest.approx(2.0)  # "sample": each document sums to 1
    assert Collator(pad_id=0, pad_to=64)(plain)["input_ids"].shape == (1, 64)


def test_collate_never_supervises_the_first_token_of_a_document():
    a, b = make_sample(0, (), prompt=0, answer=3), make_sample(1, (), prompt=0, answer=3)  # answers start at 0
    batch = Collator(pad_id=0)(concat(a, b))
    assert batch["labels"][0].tolist() == [IGNORE_INDEX, 2000, 2000, IGNORE_INDEX, 2001, 2001]


def test_position_ids_restart_per_document():
    docs = torch.tensor([[0, 0, 1, 1, 1, 2], [0, 0, 0, 0, 1, 1]])
    assert position_ids_from_documents(docs).tolist() == [[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 0, 1]]


def test_packed_batch_gives_each_conversation_its_own_logits():
    """The batch contract against the model: a pack of two samples (one text-only with a dummy tile)
    equals each sample collated and run alone."""
    from internvl.config import InternVLConfig, TextConfig, VisionConfig
    from internvl.model.internvl import InternVL

    vision = VisionConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, image_size=56, patch_size=14)
    text = TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                      rope_theta=10000.0, attention_bias=True, max_position_embeddings=512)  # fmt: skip
    torch.manual_seed(0)
    model = InternVL(InternVLConfig(vision=vision, text=text, image_token_id=127)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.1)
    ids = ImageTokenIds(start=125, context=127, end=126)
    per_tile = model.config.num_image_token  # 4 for 56 px tiles
    first = make_sample(1, [2], prompt=3, answer=4, ids=ids, per_tile=per_tile, tile_shape=(3, 56, 56))
    second = make_sample(2, (), prompt=6, answer=5, ids=ids, per_tile=per_tile, tile_shape=(3, 56, 56))
    for s in (first, second):  # token ids of the tiny vocabulary; random pixels
        s.input_ids = torch.where(s.input_ids >= 1000, s.input_ids % 100, s.input_ids)
        s.labels = torch.where(s.labels >= 1000, s.labels % 100, s.labels)
        s.pixel_values = torch.randn(s.pixel_values.shape, generator=torch.Generator().manual_seed(s.num_tokens))
    packer = Packer(PackingSettings(num_images_expected=8, max_packed_tokens=256), ids)
    packer.add(first)
    packer.add(second)
    (pack,) = packer.flush()
    collate = Collator(pad_id=0)

    def run(batch):
        with torch.no_grad():
            return model(
                batch["input_ids"], batch["pixel_values"], batch["attention_mask"], batch["position_ids"],
                image_flags=batch["image_flags"], document_ids=batch["document_ids"],
            )  # fmt: skip

    packed = run(collate([pack]))[0]
    alone = run(collate([first, second]))
    assert (packed[: first.num_tokens] - alone[0, : first.num_tokens]).abs().max() <= 1e-4
    assert (packed[first.num_tokens :] - alone[1, : second.num_tokens]).abs().max() <= 1e-4
    assert not torch.allclose(alone[0, : second.num_tokens], alone[1, : second.num_tokens])  # the rows differ


# ----------------------------------------------------------------------------------- the dataset


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, qwen2_tokenizer):
    folder = tmp_path_factory.mktemp("packed")
    make_image(60, 30, seed=1).save(folder / "a.png")
    make_image(30, 30, seed=2).save(folder / "b.png")
    text = [
        {"conversations": [{"from": "human", "value": f"Question {k}?"}, {"from": "gpt", "value": f"Answer {k}."}]}
        for k in range(40)
    ]
    images = [
        {"image": ["a.png", "b.png"][k % 2], "conversations": [{"from": "human", "value": f"<image>\nWhat is {k}?"}, {"from": "gpt", "value": f"It is {k}."}]}
        for k in range(20)
    ]  # fmt: skip
    meta = {}
    for name, records in (("text", text), ("images", images)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        meta[name] = {
            "root": str(folder),
            "annotation": str(folder / f"{name}.jsonl"),
            "repeat_time": 1,
            "data_augment": False,
        }
    (folder / "meta.json").write_text(json.dumps(meta))
    settings = SampleSettings(num_image_token=4, tile_size=28, max_tiles=4)
    return build_datasets(folder / "meta.json", qwen2_tokenizer, settings)


def all_sources(datasets):
    return sorted(ds.where(i) for ds in datasets for i in range(len(ds)))


def packed_sources(packs):
    return sorted(s for p in packs for s in p.sources)


SMALL = PackingSettings(num_images_expected=12, max_packed_tokens=400, max_buffer_size=3)


def test_packed_dataset_is_deterministic_and_uses_every_line_once(datasets):
    packed = PackedDataset(datasets, SMALL)
    first, second = list(packed), list(packed)
    assert len(first) > 5
    assert [p.input_ids.tolist() for p in first] == [p.input_ids.tolist() for p in second]
    assert [p.sources for p in first] == [p.sources for p in second]
    assert packed_sources(first) == all_sources(datasets)
    for pack in first:
        check_row(pack, 400, 12, ids=datasets[0].image_ids, per_tile=4)
    other_seed = list(PackedDataset(datasets, dataclasses.replace(SMALL, seed=1)))
    assert [p.sources for p in other_seed] != [p.sources for p in first]


def test_packed_dataset_shards_over_workers_and_ranks(datasets):
    loader = DataLoader(PackedDataset(datasets, SMALL), batch_size=None, num_workers=2)
    assert packed_sources(loader) == all_sources(datasets)
    rank0 = packed_sources(PackedDataset(datasets, SMALL, rank=0, world_size=2))
    rank1 = packed_sources(PackedDataset(datasets, SMALL, rank=1, world_size=2))
    assert not set(rank0) & set(rank1) and sorted(rank0 + rank1) == all_sources(datasets)


def test_packed_dataset_weights_and_replacement(datasets):
    only_text = PackedDataset(datasets, SMALL, weights=[1, 0])
    assert packed_sources(only_text) == sorted(datasets[0].where(i) for i in range(40))
    endless = PackedDataset(datasets, dataclasses.replace(SMALL, replacement=True), weights=[1, 3])
    sources = [s for p in itertools.islice(iter(endless), 60) for s in p.sources]
    share = sum("images.jsonl" in s for s in sources) / len(sources)
    assert len(sources) > 100 and 0.65 < share < 0.85  # weights 1:3 -> 75% from the image set
    batch = Collator(pad_id=datasets[0].encoder.tokenizer.pad_token_id)(next(iter(endless)))
    assert batch["num_samples"] >= 2 and batch["num_padding_tokens"] == 0
