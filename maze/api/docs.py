"""The docs page of the OpenAPI document, `/schema`: ReDoc, served whole by the head from this
package (maze/api/static/redoc, with its licenses), so that it works without the internet. It used
to load ReDoc, web fonts and an icon from CDNs, and was blank offline.

The page and its script are under `/schema`: on a head that requires its API token they need it, as
every route but the probes does (maze/api/auth.py).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from litestar.openapi.plugins import RedocRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

REDOC_VERSION = "2.5.4"  # npm `redoc`, bundles/redoc.standalone.js (MIT; static/redoc/README.md)
ASSETS_PATH = "/schema/assets"


def redoc_dir() -> Path:
    return Path(str(resources.files("maze.api") / "static" / "redoc"))


def docs_page() -> RedocRenderPlugin:
    """ReDoc at `/schema` (and `/schema/redoc`), its script from this head, no web fonts and no
    icon from anywhere."""
    return RedocRenderPlugin(
        js_url=f"{ASSETS_PATH}/redoc.standalone.js",
        google_fonts=False,
        favicon="<link rel='icon' href='data:,'>",
        path=["/", "/redoc"],
    )


def docs_assets() -> Router:
    """The page's script and its licenses, from the package."""
    return create_static_files_router(ASSETS_PATH, directories=[redoc_dir()], name="docs-assets")
