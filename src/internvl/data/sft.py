"""SFT data in the official format: meta file -> lazily read JSONL lines -> one sample's tensors.

    meta.json --read_meta--> [DatasetSpec] --SupervisedDataset--> EncodedSample (input_ids, labels, tiles)

* Meta file (docs/sft.md#meta-file): `{name: {root, annotation, repeat_time, data_augment, max_dynamic_patch?}}`.
* Annotations (docs/sft.md#annotation-lines) are JSONL; `LineIndex` records the byte offset of every line in one streaming
  pass and a line is read only when its sample is asked for, so a dataset of millions of lines costs
  16 bytes per line of memory, not the file.
* A line holds one image, several images (each gets `max(1, max_tiles // n_images)` tiles), a video
  (frames, one tile each) or no media at all (one dummy white tile with image flag 0 and no image tokens).
* The prompt follows the rules the chat API uses too (`internvl.inputs.prompt`): images without
  placeholders go before the first question (`Image-k: ` labels when there are several), a video's
  frames are `Frame-k: <image>` lines, and tokenisation and label masking follow
  `preprocess_internvl2_5` (docs/sft.md#masking) for every template.
* A line that cannot be used (bad JSON, missing or malformed conversations, unknown or misplaced roles,
  images that do not match the `<image>` placeholders, a missing or unreadable media file, image tokens
  cut by truncation) is an `InputError` naming `annotation:line`. With `on_bad_line="skip"` it is
  logged, counted in `SupervisedDataset.bad_lines` and skipped; with `"error"` it is raised.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from internvl.errors import ConfigError, InputError
from internvl.inputs.image import (
    DEFAULT_TILE_SIZE,
    Normalization,
    dummy_tile,
    load_image,
    split_into_tiles,
    tiles_to_tensor,
)
from internvl.inputs.prompt import (
    IGNORE_INDEX,
    ConversationEncoder,
    ImageTokenIds,
    Tokenizer,
    expand_images,
    frame_lines,
    media_lines,
)
from internvl.inputs.template import get_template
from internvl.inputs.tokens import IMAGE_PLACEHOLDER, IMG_END, VIDEO_PLACEHOLDER
from internvl.inputs.video import load_video

log = logging.getLogger(__name__)

JPEG_QUALITIES = tuple(range(75, 101))  # official train-time augmentation: JPEG re-encode at one of these

BadLinePolicy = Literal["skip", "error"]


# ------------------------------------------------------------------------------------------ meta


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of a meta file (docs/sft.md#meta-file)."""

    name: str
    root: str  # prefix of relative media paths
    annotation: str  # the .jsonl file
    repeat_time: float = 1.0  # < 1: keep the first int(len * r) lines; > 1: repeat the list int(r) times
    data_augment: bool = False  # JPEG re-encode each tile at a random quality in 75..100
    max_dynamic_patch: int | None = None  # overrides SampleSettings.max_tiles for this dataset
    length: int | None = None  # informational only


def read_meta(path: str | os.PathLike[str]) -> list[DatasetSpec]:
    """The datasets of a meta JSON file, in file order; relative annotation paths are kept as written."""
    label = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError as e:
        raise InputError(f"{label}: no such meta file") from e
    except json.JSONDecodeError as e:
        raise InputError(f"{label}:{e.lineno}: meta file is not valid JSON ({e.msg})") from e
    if not isinstance(meta, dict) or not meta:
        raise InputError(f"{label}: a meta file is a non-empty JSON object {{name: {{root, annotation, ...}}}}")
    specs = []
    for name, entry in meta.items():
        where = f"{label}: dataset {name!r}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: must be an object with root, annotation and repeat_time")
        for key in ("root", "annotation"):
            if not isinstance(entry.get(key), str):
                raise InputError(f"{where}: '{key}' must be a string")
        if not entry["annotation"].endswith(".jsonl"):
            raise InputError(f"{where}: annotation must be a .jsonl file, got {entry['annotation']!r}")
        repeat_time = entry.get("repeat_time", 1)
        if isinstance(repeat_time, bool) or not isinstance(repeat_time, (int, float)) or not repeat_time >= 0:
            raise InputError(f"{where}: repeat_time must be a number >= 0, got {repeat_time!r}")
        if repeat_time > 1 and repeat_time != int(repeat_time):
            raise InputError(f"{where}: repeat_time > 1 must be a whole number (official rule), got {repeat_time}")
        max_patch = entry.get("max_dynamic_patch")
        if max_patch is not None and (isinstance(max_patch, bool) or not isinstance(max_patch, int) or max_patch < 1):
            raise InputError(f"{where}: max_dynamic_patch must be an integer >= 1, got {max_patch!r}")
        data_augment = entry.get("data_augment", False)
        if not isinstance(data_augment, bool):
            raise InputError(f"{where}: data_augment must be true or false, got {data_augment!r}")
        length = entry.get("length")
        specs.append(
            DatasetSpec(
                name=name,
                root=entry["root"],
                annotation=entry["annotation"],
                repeat_time=float(repeat_time),
                data_augment=data_augment,
                max_dynamic_patch=max_patch,
                length=length if isinstance(length, int) else None,
            )
        )
    return specs


# ------------------------------------------------------------------------------------ line index


class LineIndex:
    """Byte offsets of the non-empty lines of a text file, found in one streaming pass.

    Memory: two int64 per line (offset and line number) plus one read chunk; the file itself is never
    held. Empty lines (also a lone `\\r`) are not samples and are left out; line numbers are the file's.
    """

    def __init__(self, path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise InputError(f"{self.path}: no such annotation file")
        starts, numbers = [], []  # per chunk: start offsets and 1-based numbers of the kept lines
        size, lines = 0, 0  # bytes and complete lines seen so far
        line_start, previous = 0, 0  # start of the current line; last byte of the previous chunk
        with open(self.path, "rb") as f:
            while chunk := f.read(chunk_size):
                data = np.frombuffer(chunk, dtype=np.uint8)
                at = np.flatnonzero(data == 10)  # newlines in this chunk
                before = data[np.maximum(at - 1, 0)]
                before[at == 0] = previous  # a chunk's first byte may be the newline after a \r
                ends = at + size  # absolute offsets of the newlines (exclusive line ends)
                begins = np.concatenate([[line_start], ends[:-1] + 1])
                keep = np.flatnonzero(ends - begins - (before == 13) > 0)  # not empty, not a lone \r
                starts.append(begins[keep])
                numbers.append(keep + lines + 1)
                if len(at):
                    line_start = int(ends[-1]) + 1
                lines += len(at)
                size += len(chunk)
                previous = int(data[-1])
        if size > line_start:  # a last line without a final newline
            starts.append(np.array([line_start]))
            numbers.append(np.array([lines + 1]))
        self._line_numbers = np.concatenate([np.zeros(0, dtype=np.int64), *numbers]).astype(np.int64, copy=False)
        # line i is bytes [starts[i], starts[i + 1]), blank lines after it included (JSON ignores them)
        self._starts = np.concatenate([*starts, [size]]).astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self._line_numbers)

    def line_number(self, i: int) -> int:
        return int(self._line_numbers[i])

    def read(self, i: int) -> str:
        start, stop = int(self._starts[i]), int(self._starts[i + 1])
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(stop - start)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{self.path}:{self.line_number(i)}: not UTF-8 text ({e.reason})") from e


# -------------------------------------------------------------------------------- the sample type


@dataclass
class EncodedSample:
    """One training row before padding: a single conversation, or several packed ones (documents).

    All tiles of a row are concatenated in token order; `tile_token_index` ties each tile to its place
    in the text so that rows can be cut consistently (packing): the index of its image's `<img>` token,
    or for a dummy tile the first token of its text-only document.
    """

    input_ids: torch.Tensor  # (L,) int64
    labels: torch.Tensor  # (L,) int64, IGNORE_INDEX where not supervised
    pixel_values: torch.Tensor  # (tiles, 3, S, S) float32
    image_flags: torch.Tensor  # (tiles,) int64: 1 = real tile, 0 = dummy tile
    document_ids: torch.Tensor  # (L,) int64: 0, 1, ... one per conversation, non-decreasing
    tile_token_index: torch.Tensor  # (tiles,) int64
    sources: list[str] = field(default_factory=list)  # "annotation:line" of each document

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_tiles(self) -> int:
        return int(self.pixel_values.shape[0])

    @property
    def num_documents(self) -> int:
        return int(self.document_ids[-1]) + 1 if self.num_tokens else 0


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SampleSettings:
    """How lines become samples. Defaults: the InternVL2.5 fine-tuning scripts (docs/sft.md#hyper-parameters)."""

    template: str = "internvl2_5"
    num_image_token: int = 256  # tokens per tile: (tile_size // 14) ** 2 // 4
    tile_size: int = DEFAULT_TILE_SIZE
    min_tiles: int = 1
    max_tiles: int = 6  # max_dynamic_patch (a meta entry may override it)
    use_thumbnail: bool = True
    dynamic_image_size: bool = True  # False: every image is one resized tile
    normalize: Normalization = "imagenet"
    max_length: int | None = 8192  # model_max_length: sequences are cut to this many tokens
    min_num_frame: int = 8  # a video sample gets randint(min, max) frames
    max_num_frame: int = 32
    on_bad_line: BadLinePolicy = "error"
    seed: int = 0  # augmentation, frame counts and packing order derive from it


def model_sample_settings(model_config: Any, options: Any, seed: int) -> SampleSettings:
    """SampleSettings for a model (template, tokens per tile, tile size, thumbnail) and a data source's
    typed options (max_tiles, max_length, on_bad_line, min_num_frame, max_num_frame)."""
    return SampleSettings(
        template=model_config.template,
        num_image_token=model_config.num_image_token,
        tile_size=model_config.vision.image_size,
        max_tiles=options.max_tiles,
        use_thumbnail=model_config.use_thumbnail,
        max_length=options.max_length,
        on_bad_line=options.on_bad_line,
        min_num_frame=options.min_num_frame,
        max_num_frame=options.max_num_frame,
        seed=seed,
    )


# --------------------------------------------------------------------------------- the dataset


class SupervisedDataset(torch.utils.data.Dataset):
    """One meta entry: `len()` lines (after repeat_time), `self[i]` -> `EncodedSample`, read lazily.

    `self[i]` with `on_bad_line="skip"` returns the next usable line after a bad one (logged and counted
    in `bad_lines`, per process); `load(i)` always raises. `iter_shard` is the packed-mode stream.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        tokenizer: Tokenizer,
        settings: SampleSettings = SampleSettings(),
        dataset_index: int = 0,
    ) -> None:
        if settings.on_bad_line not in ("skip", "error"):
            raise ConfigError(f"on_bad_line must be 'skip' or 'error', got {settings.on_bad_line!r}")
        if not 1 <= settings.min_num_frame <= settings.max_num_frame:
            raise ConfigError("video frame counts must satisfy 1 <= min_num_frame <= max_num_frame")
        self.spec = spec
        self.settings = settings
        self.dataset_index = dataset_index
        self.encoder = ConversationEncoder(tokenizer, get_template(settings.template))
        self.image_ids = ImageTokenIds.from_tokenizer(tokenizer)
        self.max_tiles = spec.max_dynamic_patch or settings.max_tiles
        self.lines = LineIndex(spec.annotation)
        n = len(self.lines)
        if spec.repeat_time < 1:
            self._order = np.arange(int(n * spec.repeat_time), dtype=np.int64)
        else:
            self._order = np.tile(np.arange(n, dtype=np.int64), int(spec.repeat_time))
        self.bad_lines = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def __len__(self) -> int:
        return len(self._order)

    def where(self, i: int) -> str:
        """`annotation:line` of sample i."""
        return f"{self.spec.annotation}:{self.lines.line_number(int(self._order[i]))}"

    def __getitem__(self, i: int) -> EncodedSample:
        if self.settings.on_bad_line == "error":
            return self.load(i)
        for k in range(len(self)):
            sample = self._load_or_report((i + k) % len(self))
            if sample is not None:
                return sample
        raise InputError(f"{self.spec.annotation}: no usable line in dataset {self.name!r}")

    def iter_shard(
        self, shard: int = 0, num_shards: int = 1, epoch: int = 0, shuffle: bool = True
    ) -> Iterator[EncodedSample]:
        """Samples of every `num_shards`-th position of this epoch's order (the official packed-mode
        sharding over ranks x workers), bad lines skipped or raised as `on_bad_line` says."""
        order = np.arange(len(self))
        if shuffle:
            order = np.random.default_rng((self.settings.seed, self.dataset_index, epoch)).permutation(len(self))
        for i in order[shard::num_shards]:
            if self.settings.on_bad_line == "error":
                yield self.load(int(i))
            elif (sample := self._load_or_report(int(i))) is not None:
                yield sample

    def _load_or_report(self, i: int) -> EncodedSample | None:
        try:
            return self.load(i)
        except InputError as e:
            self.bad_lines += 1
            log.warning("skipping a bad line (%d so far in %s): %s", self.bad_lines, self.name, e)
            return None

    # -- one line -> EncodedSample ---------------------------------------------------------------------

    def load(self, i: int) -> EncodedSample:
        """EncodedSample i, or an `InputError` that starts with `annotation:line`."""
        where = self.where(i)
        try:
            return self.build_sample(self.record(i), self.rng(i), where)
        except InputError as e:
            message = str(e)
            raise InputError(message if message.startswith(where) else f"{where}: {message}") from e

    def record(self, i: int) -> dict[str, Any]:
        """Line i as a JSON object (an `InputError` if it is not one)."""
        return json_record(self.lines.read(int(self._order[i])))

    def rng(self, i: int) -> np.random.Generator:
        """Sample i's random stream (augmentation, frame counts): the same in every process and epoch."""
        return np.random.default_rng((self.settings.seed, self.dataset_index, i))

    def build_sample(self, record: dict[str, Any], rng: np.random.Generator, where: str) -> EncodedSample:
        """One SFT record (`conversations` and its media) -> EncodedSample; `where` labels its errors."""
        system, turns = parse_conversations(record, strip=self.encoder.strip_values)
        human = [k for k, (role, _) in enumerate(turns) if role == "human"]
        images, video = record.get("image"), record.get("video")
        if images:  # str -> one image, list -> several (official dispatch)
            paths = [images] if isinstance(images, str) else images
            if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
                raise InputError("'image' must be a path or a list of paths")
            budget = max(1, self.max_tiles // len(paths)) if self.settings.dynamic_image_size else 1
            _announce(turns, human, IMAGE_PLACEHOLDER, len(paths))
            chunks = [self._image_tiles(self._media_path(p), budget, rng) for p in paths]
        elif video:
            if not isinstance(video, str):
                raise InputError("'video' must be a path")
            _announce(turns, human, VIDEO_PLACEHOLDER, 1)
            chunks = self._video_frames(self._media_path(video), record.get("clip"), rng)
            frames = frame_lines(len(chunks))  # "Frame-1: <image>\n...", one tile each
            for k in human:
                role, value = turns[k]
                value = value.replace(VIDEO_PLACEHOLDER + "\n", frames).replace(VIDEO_PLACEHOLDER, frames[:-1])
                turns[k] = (role, value)
        else:
            _announce(turns, human, IMAGE_PLACEHOLDER, 0)
            chunks = []
        tiles_per_image = [chunk.shape[0] for chunk in chunks]
        expanded = expand_images([turns[k][1] for k in human], tiles_per_image, self.settings.num_image_token)
        for k, value in zip(human, expanded):
            turns[k] = (turns[k][0], value)

        input_ids, labels = self.encoder.encode(system or self.encoder.template.system_message, turns)
        ids = torch.tensor(input_ids, dtype=torch.long)
        n_images = len(chunks)
        self.image_ids.check(ids, tiles_per_image, self.settings.num_image_token)
        max_length = self.settings.max_length
        if max_length is not None and len(input_ids) > max_length:
            ids, labels = ids[:max_length], labels[:max_length]
            if int((ids == self.image_ids.end).sum()) != n_images:
                raise InputError(
                    f"{len(input_ids)} tokens cut to max_length={max_length} would cut image tokens "
                    f"({int((ids == self.image_ids.end).sum())} of {n_images} {IMG_END} left): raise max_length"
                )
        label_tensor = torch.tensor(labels, dtype=torch.long)
        if not bool((label_tensor != IGNORE_INDEX).any()):
            raise InputError(f"no supervised token left in the first {len(labels)} tokens: raise max_length")

        if chunks:
            pixel_values = torch.cat(chunks)  # (tiles, 3, S, S)
            flags = torch.ones(pixel_values.shape[0], dtype=torch.long)
            starts = torch.nonzero(ids == self.image_ids.start).flatten()  # one per image
            tile_token_index = torch.repeat_interleave(starts, torch.tensor([c.shape[0] for c in chunks]))
        else:
            pixel_values = dummy_tile(self.settings.tile_size, self.settings.normalize)  # (1, 3, S, S)
            flags = torch.zeros(1, dtype=torch.long)
            tile_token_index = torch.zeros(1, dtype=torch.long)
        return EncodedSample(
            input_ids=ids,
            labels=label_tensor,
            pixel_values=pixel_values,
            image_flags=flags,
            document_ids=torch.zeros(len(ids), dtype=torch.long),
            tile_token_index=tile_token_index,
            sources=[where],
        )

    def _media_path(self, path: str) -> str:
        if path.startswith("s3://"):
            return self.spec.root + path  # official: plain concatenation for object-store paths
        return os.path.join(self.spec.root, path)

    def _image_tiles(self, path: str, budget: int, rng: np.random.Generator) -> torch.Tensor:
        """(tiles, 3, S, S) for one image with at most `budget` tiles (+ thumbnail)."""
        s = self.settings
        image = load_image(path)
        tiles = split_into_tiles(
            image,
            min_tiles=min(s.min_tiles, budget),
            max_tiles=budget,
            tile_size=s.tile_size,
            use_thumbnail=s.use_thumbnail,
        )
        if self.spec.data_augment:
            tiles = [jpeg_degrade(tile, int(rng.choice(JPEG_QUALITIES))) for tile in tiles]
        return tiles_to_tensor(tiles, s.normalize)

    def _video_frames(self, path: str, clip: Any, rng: np.random.Generator) -> list[torch.Tensor]:
        """One (1, 3, S, S) tile per frame. The frame count is drawn from [min_num_frame, max_num_frame]
        as in official training; the frames are the segment middles of `internvl.inputs.video` (the
        official training sampler picks a random frame in each segment instead)."""
        bound = None
        if clip is not None:
            if not (isinstance(clip, list) and len(clip) == 2 and all(isinstance(x, (int, float)) for x in clip)):
                raise InputError(f"'clip' must be [start_s, end_s], got {clip!r}")
            bound = (float(clip[0]), float(clip[1]))
        n = int(rng.integers(self.settings.min_num_frame, self.settings.max_num_frame + 1))
        frames = load_video(
            path, num_segments=n, bound=bound, tile_size=self.settings.tile_size, normalize=self.settings.normalize
        )
        return list(frames.pixel_values.split(1))


def json_record(text: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg} at column {e.colno})") from e
    except RecursionError as e:
        raise InputError("not valid JSON (nested too deeply)") from e
    if not isinstance(record, dict):
        raise InputError(f"a line must be a JSON object, got {type(record).__name__}")
    if "\\ud" in text.lower():  # a \\uDXXX escape may be a lone surrogate, text no tokenizer takes
        try:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(f"the line holds invalid Unicode ({e.reason})") from e
    return record


def parse_conversations(record: dict[str, Any], strip: bool = False) -> tuple[str | None, list[tuple[str, str]]]:
    """(system text or None, [(role, value)]) with roles "human" / "gpt", checked.

    Rules: a non-empty list of {"from", "value"}; `value` a string; `from` one of human, gpt and system,
    system only first; at least one human and one gpt turn. The official code accepts any order of
    human and gpt turns for internvl2_5, and so do we.
    """
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise InputError("missing 'conversations' (a non-empty list of {'from', 'value'})")
    system: str | None = None
    turns: list[tuple[str, str]] = []
    for k, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise InputError(f"conversations[{k}] must be an object with a string 'value'")
        role = turn.get("from")
        if role == "system":
            if k != 0:
                raise InputError(f"conversations[{k}]: a system turn may only come first")
            system = turn["value"]
        elif role in ("human", "gpt"):
            turns.append((role, turn["value"].strip() if strip else turn["value"]))
        else:
            raise InputError(f"conversations[{k}]: unknown role {role!r}; use 'human', 'gpt' or a first 'system'")
    if not any(role == "human" for role, _ in turns) or not any(role == "gpt" for role, _ in turns):
        raise InputError("a conversation needs at least one 'human' and one 'gpt' turn")
    return system, turns


def folder_records(folder: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every record of the SFT JSONL files in ``folder`` (sorted by name), each checked as the recipe
    checks a line (`json_record`, `parse_conversations`), read one line at a time.

    Tools that read a whole folder (the nano tokenizer, the answer prior) stop on the first fault:
    an ``InputError`` names the folder when it holds no such file, else ``annotation:line``.
    """
    folder = Path(folder)
    annotations = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not annotations:
        raise InputError(f"{folder}: no *.jsonl annotation files")
    for annotation in annotations:
        with annotation.open(encoding="utf-8") as f:
            for number, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    record = json_record(text)
                    parse_conversations(record)
                except InputError as e:
                    raise InputError(f"{annotation}:{number}: {e}") from e
                yield record


def _announce(turns: list[tuple[str, str]], human: list[int], placeholder: str, count: int) -> None:
    """Check the user turns hold `count` placeholders; with none, put them before the first user turn."""
    found = sum(turns[k][1].count(placeholder) for k in human)
    if found == 0 and count > 0:
        role, value = turns[human[0]]
        lines = media_lines(count) if placeholder == IMAGE_PLACEHOLDER else (placeholder + "\n") * count
        turns[human[0]] = (role, lines + value)
    elif found != count:
        kind = "image(s)" if placeholder == IMAGE_PLACEHOLDER else "video(s)"
        raise InputError(f"the user turns hold {found} {placeholder} placeholder(s) for {count} {kind}")
    if placeholder == VIDEO_PLACEHOLDER and any(IMAGE_PLACEHOLDER in turns[k][1] for k in human):
        raise InputError(f"a video sample must not hold {IMAGE_PLACEHOLDER} placeholders: its frames are the images")


def jpeg_degrade(tile: Image.Image, quality: int) -> Image.Image:
    """Official train-time augmentation: encode as JPEG at `quality` and decode again."""
    with io.BytesIO() as buffer:
        tile.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        return Image.open(buffer).convert("RGB")


def build_datasets(
    meta_path: str | os.PathLike[str], tokenizer: Tokenizer, settings: SampleSettings = SampleSettings()
) -> list[SupervisedDataset]:
    """One `SupervisedDataset` per meta entry, in file order (the entry's position seeds its shuffle)."""
    return [SupervisedDataset(spec, tokenizer, settings, k) for k, spec in enumerate(read_meta(meta_path))]


def dataset_weights(datasets: Sequence[SupervisedDataset], resampling: bool = False) -> list[float]:
    """Sampling weights of the packed mix: len(ds), or sqrt(len(ds)) with `resampling` (official)."""
    return [math.sqrt(len(ds)) if resampling else float(len(ds)) for ds in datasets]
