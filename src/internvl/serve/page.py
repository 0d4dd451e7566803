"""The chat page at `/` (README.md, "The chat page"): static HTML, JavaScript and CSS shipped in the
package under `serve/static/`, with no build step and nothing fetched from elsewhere, so it works
offline. The page talks to this server's own routes. A strict Content-Security-Policy allows only
those files, so even text that slipped into the page as markup could not run as a script."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def add_page_routes(app: FastAPI) -> None:
    """Serve the page's three files, read once from the package."""
    for route, (name, media_type) in PAGE_FILES.items():
        body = (resources.files("internvl.serve") / "static" / name).read_bytes()
        app.add_api_route(route, _file_response(body, media_type), methods=["GET"], include_in_schema=False)


def _file_response(body: bytes, media_type: str):  # type: ignore[no-untyped-def]
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }

    async def respond() -> Response:
        return Response(body, media_type=media_type, headers=headers)

    return respond
