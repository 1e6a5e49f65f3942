"""/docs: Swagger UI from the vendored assets under api/static/swagger (no CDN, works offline), started
by a script file rather than FastAPI's inline one, so the page runs under a CSP without inline script."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

PAGE = Path(__file__).resolve().parent.parent / "static" / "swagger" / "index.html"


@router.get("/docs")
async def swagger_ui() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html")
