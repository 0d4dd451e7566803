"""What the server accepts and from where: network, key, media sources and caps. Safe by default:
loopback only, no URL fetching, no local files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServeSettings:
    """host, port: where to listen (127.0.0.1: this machine only). model_name: the id clients pass as
    `model`. api_key: required as `Authorization: Bearer KEY` when set. allow_url_fetch: download
    http(s) image and video URLs. allowed_media_dir: the folder `file://` URLs may read from (None: no
    local files). The caps bound one request: its body, its images (and videos), each image's pixels,
    fetched media bytes, video frames, `max_tokens`, `n` and `max_tiles`."""

    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str = "internvl"
    api_key: str | None = None
    allow_url_fetch: bool = False
    allowed_media_dir: Path | None = None
    max_request_bytes: int = 32 * 2**20
    max_images: int = 16
    max_image_pixels: int = 4096 * 4096
    max_media_bytes: int = 16 * 2**20
    max_video_frames: int = 32
    max_tokens: int = 2048
    max_n: int = 8
    max_tiles: int = 12
    fetch_timeout_s: float = 10.0
