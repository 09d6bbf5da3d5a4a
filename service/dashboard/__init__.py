"""The dashboard: static HTML, CSS and ES modules served by the API, no build step, no CDN.

`GET /` is the page; its assets live under `/dashboard/`. Everything else (`/v1`, `/healthz`,
`/docs`) stays the API's: the dashboard is mounted beside it, not over it. The page talks to the
same API with the key the person signed in with, sent in the Authorization header only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent / "static"

# The report is shown from srcdoc, which inherits this policy: its inline <style> needs
# 'unsafe-inline' for styles (the report has no script, and the iframe's sandbox forbids any).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; frame-src 'self' about:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}


class _Assets(StaticFiles):
    """The modules, revalidated on every load (a cheap 304): an upgraded server never runs old code."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update({"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
        return response


def mount(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)

    app.mount("/dashboard", _Assets(directory=STATIC), name="dashboard")
