"""From a video file to InternVL frame tiles: segment-based frame sampling, one tile per frame.

Follows the official inference recipe (README `load_video`, docs/images-and-video.md#video): split the (optionally
bounded) frame range into `num_segments` equal segments, take the middle frame of each, resize it
to one S x S tile (no grid, no thumbnail), normalise. In the prompt the frames appear as
`Frame-1: <image>\\nFrame-2: <image>\\n…` (`internvl.inputs.prompt.frame_lines`), each `<image>` worth one tile.

Decoding uses PyAV (the `[video]` extra), imported only when a video is actually read. The official
code decodes with decord; both use FFmpeg, but the YUV -> RGB conversion is not guaranteed to be
bit-identical between them.
"""

import os
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from internvl.errors import InputError
from internvl.inputs.image import DEFAULT_TILE_SIZE, Normalization, split_into_tiles, tiles_to_tensor

DEFAULT_NUM_SEGMENTS = 8  # README / model cards; the MVBench eval uses 16


@dataclass(frozen=True)
class VideoFrames:
    """Sampled frames of one video, one tile each."""

    pixel_values: torch.Tensor  # (num_frames, 3, S, S) float32
    frame_indices: list[int]  # index of each sampled frame in the decoded stream
    fps: float  # average frame rate of the stream
    total_frames: int  # frames in the stream

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)


def frame_indices(
    num_segments: int,
    fps: float,
    max_frame: int,
    bound: tuple[float, float] | None = None,
    first_idx: int = 0,
) -> list[int]:
    """Official `get_index`: the middle frame of each of `num_segments` equal segments.

    `max_frame` is the last valid index (frames - 1); `bound` = (start_s, end_s) in seconds limits
    the range. Rounding is half-to-even (Python `round`, like the official `round`/`np.round`).
    """
    if num_segments < 1:
        raise InputError(f"num_segments must be >= 1, got {num_segments}")
    start, end = bound if bound else (-100000, 100000)  # official: a falsy bound means the whole video
    if bound and not start <= end:
        raise InputError(f"video bound must be (start_s, end_s) with start <= end, got {bound}")
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    if start_idx > end_idx:
        raise InputError(f"video bound {bound} selects no frame (the video has frames 0..{max_frame} at {fps:g} fps)")
    segment = float(end_idx - start_idx) / num_segments
    return [int(start_idx + segment / 2 + round(segment * k)) for k in range(num_segments)]


def load_video(
    source: str | os.PathLike[str],
    *,
    num_segments: int = DEFAULT_NUM_SEGMENTS,
    bound: tuple[float, float] | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    normalize: Normalization = "imagenet",
) -> VideoFrames:
    """Decode `source`, sample `num_segments` frames and turn each into one normalised tile."""
    av = _import_av()
    label = os.fspath(source)
    if not os.path.isfile(source):
        raise InputError(f"{label}: no such video file")
    if os.path.getsize(source) == 0:
        raise InputError(f"{label}: empty file (0 bytes), not a video")
    try:
        with av.open(label) as container:
            stream = _video_stream(label, container)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            total = stream.frames or _count_frames(container, stream)
        if total < 1 or fps <= 0:
            raise InputError(f"{label}: video stream has no frames or no frame rate")
        indices = frame_indices(num_segments, fps, total - 1, bound)
        frames, decoded = _decode_frames(av, label, set(indices))
        if decoded < total and any(i >= decoded for i in indices):
            # The container over-reported its frame count: sample again over the frames that exist.
            total = decoded
            indices = frame_indices(num_segments, fps, total - 1, bound)
            frames, _ = _decode_frames(av, label, set(indices))
    except InputError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{label}: cannot decode video ({reason})") from e
    tiles = [split_into_tiles(frames[i], max_tiles=1, tile_size=tile_size)[0] for i in indices]
    return VideoFrames(tiles_to_tensor(tiles, normalize), indices, fps, total)


def _import_av() -> Any:
    try:
        import av
    except ImportError as e:
        raise InputError("reading videos needs PyAV: pip install 'internvl[video]'") from e
    return av


def _video_stream(label: str, container: Any) -> Any:
    if not container.streams.video:
        raise InputError(f"{label}: no video stream in the file")
    return container.streams.video[0]


def _count_frames(container: Any, stream: Any) -> int:
    """Frame count by decoding, for containers that do not store it (e.g. some WebM/MKV files)."""
    return sum(1 for _ in container.decode(stream))


def _decode_frames(av: Any, label: str, wanted: set[int]) -> tuple[dict[int, Image.Image], int]:
    """RGB images of the frames in `wanted` (decoded in order, stopping after the last), and how many
    frames were decoded."""
    frames: dict[int, Image.Image] = {}
    last = max(wanted)
    decoded = 0
    with av.open(label) as container:
        stream = _video_stream(label, container)
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if index in wanted:
                frames[index] = Image.fromarray(frame.to_ndarray(format="rgb24"))  # (H, W, 3) uint8
            if index >= last:
                break
    return frames, decoded
