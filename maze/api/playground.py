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
- Nothing but the bundle's own files is ever read: the path is resolved (`..`, encoded slashes,
  symlinks) and must stay inside the bundle, else it is a page of the app (index.html) or, under
  `assets/`, a 404; a NUL byte or a path over MAX_PATH is a 400 (tests/test_playground_serving.py).
- Every file carries `nosniff` and may not be framed by another site (SAFETY).

Without `--playground` none of these routes exist (404).
"""

from __future__ import annotations

import mimetypes
from importlib import resources
from pathlib import Path

from litestar import Response, get, head
from litestar.response import File, Redirect

from maze.core.errors import NotFound, ValidationError

PREFIX = "/playground"
ASSET_CACHE = "public, max-age=31536000, immutable"
PAGE_CACHE = "no-cache"
MAX_PATH = 1024  # the app's own paths are short; a longer one is refused before the file system
# the app is not to be framed by another site (a hidden Cancel button under a decoy), nor a file
# sniffed into another type
SAFETY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
}
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
        headers={"cache-control": PAGE_CACHE, **SAFETY},
    )


def bundle_file(root: Path, relative: str) -> Path | None:
    """The bundle's own file that `relative` names, or None. `root` is resolved; so is the file
    (`..`, `.`, doubled slashes, a symlink): whatever it resolves to outside `root` is None, as is a
    name the file system refuses (too long)."""
    try:
        wanted = (root / relative.lstrip("/")).resolve()
        if wanted.is_relative_to(root) and wanted.is_file():
            return wanted
    except OSError:
        return None
    return None


def _serve(path: str) -> File:
    if "\x00" in path or len(path) > MAX_PATH:
        raise ValidationError(f"not a Playground path (a NUL byte, or over {MAX_PATH} characters)")
    relative = path.lstrip("/")
    if relative:
        root = bundle_dir().resolve()
        wanted = bundle_file(root, relative)
        if wanted is not None:
            # the cache rule follows the file served, not the path asked (`assets/../index.html`)
            immutable = wanted.relative_to(root).parts[0] == "assets"
            return File(
                wanted,
                content_disposition_type="inline",
                media_type=_content_type(wanted),
                filename=wanted.name,
                headers={"cache-control": ASSET_CACHE if immutable else PAGE_CACHE, **SAFETY},
            )
        if relative.startswith("assets/"):  # a missing asset is a 404, never the page
            raise NotFound(f"no such Playground file: {relative[:200]}")
    return _index()


@get(["/"], include_in_schema=False)
async def root_redirect() -> Redirect:
    return Redirect(PREFIX + "/")


@head(["/"], include_in_schema=False)
async def root_redirect_head() -> Response[None]:
    return Response(None, status_code=302, headers={"location": PREFIX + "/"})


@get([PREFIX, PREFIX + "/{path:path}"], include_in_schema=False)
async def playground_file(path: str = "") -> File:
    """A file of the bundle, or index.html for the app's own pages."""
    return _serve(path)


@head([PREFIX, PREFIX + "/{path:path}"], include_in_schema=False)
async def playground_file_head(path: str = "") -> File:
    """What GET answers, headers only."""
    return _serve(path)


ROUTES = [root_redirect, root_redirect_head, playground_file, playground_file_head]
_OPEN = tuple(route.fn for route in ROUTES)
