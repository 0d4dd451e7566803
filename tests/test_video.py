"""Video frame sampling and decoding (docs/images-and-video.md#video) on small clips written with PyAV in the test."""

import builtins
import sys

import numpy as np
import pytest
import torch

from internvl.errors import InputError
from internvl.inputs.video import frame_indices, load_video
from tests.inputs_fixtures import decoded_frame_ids, write_clip

av = pytest.importorskip("av")


def spec_get_index(bound, fps, max_frame, first_idx=0, num_segments=32):
    """The official `get_index` (docs/images-and-video.md#video), written here (numpy rounding, as in the official code)."""
    if bound:
        start, end = bound[0], bound[1]
    else:
        start, end = -1e5, 1e5
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    return [int(start_idx + seg_size / 2 + np.round(seg_size * k)) for k in range(num_segments)]


def test_frame_indices_match_spec_formula():
    for num_segments in (1, 2, 3, 7, 8, 16, 32, 100):
        for fps in (1.0, 7.5, 10.0, 23.976, 25.0, 29.97, 30.0, 60.0):
            for max_frame in (0, 1, 9, 29, 100, 299, 1799):
                for bound in (None, (0.0, 1.0), (0.5, 2.25), (1.0, 100.0), (-3.0, 0.7)):
                    if bound and max(0, round(bound[0] * fps)) > min(round(bound[1] * fps), max_frame):
                        with pytest.raises(InputError, match="selects no frame"):
                            frame_indices(num_segments, fps, max_frame, bound)
                        continue
                    expected = spec_get_index(bound, fps, max_frame, num_segments=num_segments)
                    assert frame_indices(num_segments, fps, max_frame, bound) == expected


def test_frame_indices_examples():
    # 29/8 = 3.625 frames per segment: int(1.8125 + round(3.625 k)); round(14.5) = 14 (half to even)
    assert frame_indices(8, 10.0, 29) == [1, 5, 8, 12, 15, 19, 23, 26]
    # frames 10..20, 2.5 per segment: round(2.5) = 2, round(7.5) = 8
    assert frame_indices(4, 10.0, 29, bound=(1.0, 2.0)) == [11, 13, 16, 19]
    assert frame_indices(1, 30.0, 0) == [0]
    with pytest.raises(InputError, match="start <= end"):
        frame_indices(4, 10.0, 29, bound=(2.0, 1.0))
    with pytest.raises(InputError, match="num_segments"):
        frame_indices(0, 10.0, 29)


@pytest.mark.parametrize("suffix", ["avi", "mkv"])  # AVI stores the frame count, Matroska does not
def test_load_video_samples_the_right_frames(tmp_path, suffix):
    path = write_clip(tmp_path / f"clip.{suffix}")
    video = load_video(path, num_segments=8)
    assert video.total_frames == 30 and video.fps == pytest.approx(10.0)
    assert video.frame_indices == spec_get_index(None, 10.0, 29, num_segments=8)
    assert video.pixel_values.shape == (8, 3, 448, 448) and video.pixel_values.dtype == torch.float32
    assert decoded_frame_ids(video.pixel_values) == video.frame_indices


def test_load_video_with_bound_and_lossy_codec(tmp_path):
    path = write_clip(tmp_path / "clip.mp4", codec="mpeg4", pix_fmt="yuv420p")
    video = load_video(path, num_segments=4, bound=(1.0, 2.0), tile_size=224)
    assert video.frame_indices == spec_get_index((1.0, 2.0), 10.0, 29, num_segments=4) == [11, 13, 16, 19]
    assert video.pixel_values.shape == (4, 3, 224, 224)
    assert decoded_frame_ids(video.pixel_values) == pytest.approx(video.frame_indices, abs=1)  # lossy colours


def test_more_segments_than_frames(tmp_path):
    path = write_clip(tmp_path / "short.avi", n_frames=3)
    video = load_video(path, num_segments=8)
    assert video.frame_indices == spec_get_index(None, 10.0, 2, num_segments=8)
    assert decoded_frame_ids(video.pixel_values) == video.frame_indices  # repeated frames are fine


def test_bad_videos(tmp_path):
    with pytest.raises(InputError, match=r"missing\.mp4: no such video file"):
        load_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.mp4: empty file"):
        load_video(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("not a video at all\n" * 10)
    with pytest.raises(InputError, match=r"text\.mp4: cannot decode video"):
        load_video(tmp_path / "text.mp4")
    path = write_clip(tmp_path / "clip.avi")
    with pytest.raises(InputError, match="selects no frame"):
        load_video(path, bound=(10.0, 20.0))  # the clip lasts 3 s


def test_missing_pyav_is_a_clear_error(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("No module named 'av'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "av")
    monkeypatch.setattr(builtins, "__import__", no_av)
    with pytest.raises(InputError, match=r"pip install 'internvl\[video\]'"):
        load_video(tmp_path / "clip.mp4")
