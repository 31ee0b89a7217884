"""``GET /``: the dashboard page, with its script, style and the charting library.

Works with no internet: plotly.js is served from the installed ``plotly`` Python
package, never from a CDN.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}


def plotly_js() -> Path:
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


@router.get("/")
def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/static/vendor/plotly.min.js")
def plotly() -> FileResponse:
    return FileResponse(plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


@router.get("/static/{name}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:  # a fixed set: no path from the request reaches the disk
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no asset {name!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name])
