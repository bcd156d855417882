"""GET /: a plain page to try the service (static HTML + JS from the package; no build step, no CDN)."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_FILES = {"app.js": "text/javascript", "style.css": "text/css"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html")


@router.get("/web/default_avatar.png")
async def default_avatar(request: Request) -> FileResponse:
    """The portrait the service speaks with when a request sends none (DEFAULT_AVATAR)."""
    return FileResponse(request.app.state.service.settings.default_avatar)


@router.get("/web/{name}")
async def asset(name: str) -> FileResponse:
    if name not in _FILES:
        raise HTTPException(status_code=404)
    return FileResponse(WEB_DIR / name, media_type=_FILES[name])
