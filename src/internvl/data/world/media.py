"""Pictures and videos on disk: PNG files, and videos as mp4 (PyAV) or a folder of PNG frames.

Layout under a media root (``OUT/images``)::

    <split>/<family>/<id>.png        one picture (multi-image samples: <id>_<j>.png)
    <split>/video/<id>.mp4           a video when PyAV is installed (H.264, 4 fps)
    <split>/video/<id>/frame_NN.png  otherwise; the sample's path is the folder with a trailing "/",
                                     which the official loader reads as a frame folder
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from PIL import Image

from internvl.data.world.png import save_png
from internvl.data.world.sample import Sample
from internvl.errors import InputError

VIDEO_FPS = 4
VIDEO_FORMATS = ("auto", "mp4", "frames")


def has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_video_format(video_format: str) -> str:
    """``auto`` -> ``mp4`` when PyAV is installed, else ``frames``; unknown or impossible -> InputError."""
    if video_format not in VIDEO_FORMATS:
        raise InputError(f"unknown video format {video_format!r}; choose one of {', '.join(VIDEO_FORMATS)}")
    if video_format == "auto":
        return "mp4" if has_pyav() else "frames"
    if video_format == "mp4" and not has_pyav():
        raise InputError("writing mp4 needs PyAV: pip install 'av>=12,<20' (or use --video-format frames)")
    return video_format


def write_mp4(frames: Sequence[Image.Image], path: Path, fps: int = VIDEO_FPS) -> None:
    """H.264 mp4 (yuv420p, crf 18, preset ultrafast) via PyAV; single-threaded, so bytes are reproducible."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast", "threads": "1"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video_frames(path: str | Path) -> list[Image.Image]:
    """Frames of a written video: an mp4 (via PyAV) or a folder of PNG frames."""
    path = Path(path)
    if path.is_dir():
        return [Image.open(p).convert("RGB") for p in sorted(path.glob("frame_*.png"))]
    import av

    with av.open(str(path)) as container:
        return [frame.to_image() for frame in container.decode(video=0)]


def save_media(sample: Sample, root: Path, video_format: str) -> Sample:
    """Write the sample's pictures under ``root``; return it with paths relative to ``root``.

    ``video_format`` is ``mp4`` or ``frames`` (see :func:`resolve_video_format`).
    """
    folder = Path(sample.split) / ("video" if sample.frames else sample.family)
    (root / folder).mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    for j, image in enumerate(sample.images):
        name = f"{sample.id}.png" if len(sample.images) == 1 else f"{sample.id}_{j}.png"
        save_png(image, root / folder / name)
        paths.append(str(folder / name))
    video = None
    if sample.frames:
        if video_format == "mp4":
            video = str(folder / f"{sample.id}.mp4")
            write_mp4(sample.frames, root / video)
        else:
            (root / folder / sample.id).mkdir(exist_ok=True)
            for j, frame in enumerate(sample.frames):
                save_png(frame, root / folder / sample.id / f"frame_{j:02d}.png")
            video = str(folder / sample.id) + "/"
    return replace(sample, images=paths, frames=[], video=video)
