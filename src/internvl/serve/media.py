"""Media a request refers to, read under the server's rules.

    data:image/png;base64,...   always allowed (PNG, JPEG, WebP and GIF; sniffed from the bytes)
    file:///path/to/a.png       only inside `allowed_media_dir` (symbolic links resolved first)
    https://host/a.png          only with `allow_url_fetch`

Every refusal is an `APIError` with a message that says what to change; the bytes are capped
(`max_media_bytes`) and images are checked for their pixel count before they are decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from PIL import Image

from internvl.errors import InputError
from internvl.inputs.image import load_image
from internvl.serve.protocol import APIError
from internvl.serve.settings import ServeSettings

IMAGE_SIGNATURES = {  # leading bytes -> format; PIL's many other decoders are not exposed to clients
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
}


def image_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for signature, name in IMAGE_SIGNATURES.items() if data.startswith(signature)), None)


def load_image_url(url: str, settings: ServeSettings, label: str) -> Image.Image:
    """The RGB image at `url` (a data:, file: or http(s): URL); `label` names it in errors."""
    return decode_image(read_image_url(url, settings, label), settings, label)


def read_image_url(url: str, settings: ServeSettings, label: str) -> bytes:
    """The encoded bytes of the image at `url`, checked to be a PNG, JPEG, WebP or GIF."""
    data = read_url(url, settings, label, kind="image")
    if image_format(data) is None:
        raise APIError(400, f"{label}: not a PNG, JPEG, WebP or GIF image", code="invalid_image")
    return data


def image_size(data: bytes, settings: ServeSettings, label: str) -> tuple[int, int]:
    """(width, height) from the image's header, no pixel decoded; the pixel cap is checked here."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise APIError(400, f"{label}: cannot read the image header ({exc})", code="invalid_image") from exc
    if width * height > settings.max_image_pixels:
        raise APIError(
            400,
            f"{label}: {width}x{height} pixels is over this server's cap of {settings.max_image_pixels}",
            code="invalid_image",
        )
    return width, height


def decode_image(data: bytes, settings: ServeSettings, label: str) -> Image.Image:
    try:
        return load_image(data, max_pixels=settings.max_image_pixels, name=label)
    except InputError as exc:  # undecodable, truncated, or over the pixel cap
        raise APIError(400, str(exc), code="invalid_image") from exc


def read_url(url: str, settings: ServeSettings, label: str, kind: str) -> bytes:
    """The bytes behind a data:, file: or http(s): URL, if the settings allow it."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        data = _read_data_url(url, label, kind)
    elif scheme == "file":
        data = _read_file_url(url, settings, label)
    elif scheme in ("http", "https"):
        data = _fetch(url, settings, label)
    else:
        raise APIError(400, f"{label}: unsupported URL; use a data:{kind}/...;base64 URL", code=f"invalid_{kind}")
    if len(data) > settings.max_media_bytes:
        raise APIError(
            413, f"{label}: {len(data)} bytes exceed the limit of {settings.max_media_bytes}", code="media_too_large"
        )
    return data


def _read_data_url(url: str, label: str, kind: str) -> bytes:
    header, sep, payload = url.partition(",")
    media_type = header[len("data:") :].split(";")[0].lower()
    if not sep or not header.endswith(";base64"):
        raise APIError(
            400, f"{label}: a data URL must be base64 encoded (data:{kind}/...;base64,...)", code=f"invalid_{kind}"
        )
    if media_type and not media_type.startswith(f"{kind}/"):
        raise APIError(
            400, f"{label}: a data URL of type {media_type!r} where a {kind} was expected", code=f"invalid_{kind}"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise APIError(400, f"{label}: invalid base64 data ({exc})", code=f"invalid_{kind}") from exc


def _read_file_url(url: str, settings: ServeSettings, label: str) -> bytes:
    if settings.allowed_media_dir is None:
        raise APIError(
            403,
            f"{label}: file:// URLs are disabled; start the server with --allowed-media-dir",
            code="media_not_allowed",
        )
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise APIError(400, f"{label}: file URLs must name a local path (file:///...)", code="invalid_url")
    root = settings.allowed_media_dir.resolve()
    given = urllib.parse.unquote(parsed.path)  # errors name the client's own path, never what it resolves to
    if "\x00" in given:
        raise APIError(400, f"{label}: the file path holds a NUL byte", code="invalid_url")
    try:
        path = Path(given).resolve()
        if not path.is_relative_to(root):
            raise APIError(403, f"{label}: {given} is outside the allowed media folder", code="media_not_allowed")
        if not path.is_file():
            raise APIError(400, f"{label}: no such file {given}", code="invalid_url")
        if path.stat().st_size > settings.max_media_bytes:
            raise APIError(413, f"{label}: the file exceeds {settings.max_media_bytes} bytes", code="media_too_large")
        return path.read_bytes()
    except OSError as exc:
        raise APIError(
            400, f"{label}: cannot read {given} ({exc.strerror or type(exc).__name__})", code="invalid_url"
        ) from exc


def _fetch(url: str, settings: ServeSettings, label: str) -> bytes:
    if not settings.allow_url_fetch:
        raise APIError(
            403,
            f"{label}: fetching URLs is disabled; send the media as a data: URL or start the "
            "server with --allow-url-fetch",
            code="url_fetch_disabled",
        )
    request = urllib.request.Request(url, headers={"User-Agent": "internvl-serve"})
    try:
        with urllib.request.urlopen(request, timeout=settings.fetch_timeout_s) as response:
            data = response.read(settings.max_media_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise APIError(400, f"{label}: cannot fetch {url} ({exc})", code="fetch_failed") from exc
    return data
