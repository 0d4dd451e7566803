"""What the server accepts and from where: network, key, media sources and caps. Safe by default:
loopback only, no URL fetching, no local files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from internvl.errors import InputError


@dataclass(frozen=True)
class ServeSettings:
    """host, port: where to listen (127.0.0.1: this machine only). model_name: the id clients pass as
    `model`. api_key: required as `Authorization: Bearer KEY` when set. allow_url_fetch: download
    http(s) image and video URLs. allowed_media_dir: the folder `file://` URLs may read from (None: no
    local files). The caps bound one request: its body, its images (and videos), each image's pixels,
    fetched media bytes, video frames, `max_tokens`, `n` and `max_tiles`. web: serve the chat page at `/`."""

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
    web: bool = True
    shutdown_timeout_s: float = 30.0  # on Ctrl-C, answers still running after this long are cut off

    def check(self) -> None:
        """One line naming the flag when a setting would make the server useless or crash at start."""
        if not 1 <= self.port <= 65535:
            raise InputError(f"--port must be between 1 and 65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise InputError(
                "the API key is empty (--api-key or INTERNVL_API_KEY): every request would be refused; "
                "give a key or unset it"
            )
        if self.allowed_media_dir is not None and not self.allowed_media_dir.is_dir():
            raise InputError(f"--allowed-media-dir {self.allowed_media_dir}: no such folder")
        positive = {
            "--max-request-bytes": self.max_request_bytes,
            "--max-image-pixels": self.max_image_pixels,
            "--max-tokens": self.max_tokens,
            "--max-tiles-cap": self.max_tiles,
            "--max-n": self.max_n,
            "--max-media-bytes": self.max_media_bytes,
            "--max-video-frames": self.max_video_frames,
        }
        for flag, value in positive.items():
            if value < 1:
                raise InputError(f"{flag} must be at least 1, got {value}")
        if self.max_images < 0:
            raise InputError(f"--max-images must be 0 (text only) or more, got {self.max_images}")
        if not self.shutdown_timeout_s > 0:
            raise InputError(f"the shutdown timeout must be positive, got {self.shutdown_timeout_s}")
