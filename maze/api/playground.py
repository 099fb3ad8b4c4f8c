"""The Playground: the web app built from ui/ (`npm ci && npm run build` writes it into
maze/api/static/playground, committed, so that `pip install` ships it), served by the head on its
own port under `/playground/` when it starts with `--playground`, same origin as the API.

- A file of the bundle answers as itself, with its content type; `assets/` names carry their
  content's hash, so they are cached for a year (`immutable`); `index.html` is revalidated on every
  load (`no-cache`), so a new bundle is picked up at once.
- Any other path under `/playground/` is a page of the app (`/playground/runs/<id>`): it answers
  `index.html` and the app routes itself (SPA fallback); so does `/playground(/)`. `/`
  redirects to `/playground/`.
- The app's files hold no data and no secret (they are the repository's own code), so they are
  open on a head that requires its API token, as the browser cannot add a header to a page load:
  every call the app makes to the API carries the token (the app asks for it on a 401 and keeps it
  in the browser's localStorage). Only GET/HEAD of these paths are open (maze/api/auth.py).

Without `--playground` none of these routes exist (404).
"""

from __future__ import annotations

import mimetypes
from importlib import resources
from pathlib import Path

from litestar import Response, get
from litestar.response import File, Redirect

from maze.core.errors import NotFound

PREFIX = "/playground"
ASSET_CACHE = "public, max-age=31536000, immutable"
PAGE_CACHE = "no-cache"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".json": "application/json"}


def bundle_dir() -> Path:
    return Path(str(resources.files("maze.api") / "static" / "playground"))


def open_handler(handler: object) -> bool:
    """Whether a request routed to `handler` is for one of the Playground's own files or pages
    (open without the token): only the two handlers below, never an API route under the same
    prefix (`/playground/llm`, `/playground/catalog`)."""
    return getattr(handler, "fn", None) in _OPEN  # Litestar registers copies of the handlers


def _content_type(path: Path) -> str:
    return _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _index() -> File:
    index = bundle_dir() / "index.html"
    if not index.is_file():
        raise NotFound("the Playground bundle is not built: run `npm ci && npm run build` in ui/")
    return File(
        index,
        content_disposition_type="inline",
        media_type="text/html",
        filename="index.html",
        headers={"cache-control": PAGE_CACHE},
    )


@get(["/"], include_in_schema=False)
async def root_redirect() -> Redirect:
    return Redirect(PREFIX + "/")


@get([PREFIX, PREFIX + "/{path:path}"], include_in_schema=False)
async def playground_file(path: str = "") -> File | Response[bytes]:
    """A file of the bundle, or index.html for the app's own pages."""
    root = bundle_dir().resolve()
    relative = path.lstrip("/")
    if relative:
        wanted = (root / relative).resolve()
        if wanted.is_relative_to(root) and wanted.is_file():
            cache = ASSET_CACHE if relative.startswith("assets/") else PAGE_CACHE
            return File(
                wanted,
                content_disposition_type="inline",
                media_type=_content_type(wanted),
                filename=wanted.name,
                headers={"cache-control": cache},
            )
        if relative.startswith("assets/"):  # a missing asset is a 404, never the page
            raise NotFound(f"no such Playground file: {relative}")
    return _index()


ROUTES = [root_redirect, playground_file]
_OPEN = tuple(route.fn for route in ROUTES)
