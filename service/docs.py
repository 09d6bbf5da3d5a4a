"""The API docs, served offline: Swagger UI at /docs and ReDoc at /redoc from assets shipped in a package.

FastAPI's own /docs and /redoc pages load Swagger UI, ReDoc and Google Fonts from CDNs, so on a
machine without internet (or behind a strict proxy) the dashboard's "API docs" link opened a blank
page. The `fastapi-offline` package ships the same assets (swagger-ui-bundle.js, swagger-ui.css,
redoc.standalone.js); they are served from /docs-assets/ and the pages reference nothing else.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
# The pages may load nothing from elsewhere: a browser enforces it, whatever a bundle's code tries.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'self'")
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"  # the one remote URL in the ReDoc bundle


def assets_dir() -> Path:
    """The directory of fastapi_offline's static files (found without importing the package)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the API docs need the fastapi-offline package (pip install fastapi-offline)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def mount(app: FastAPI) -> None:
    """GET /docs (Swagger UI), /docs/oauth2-redirect, /redoc and /docs-assets/*; create the app with
    docs_url=None and redoc_url=None so FastAPI's CDN pages are not registered."""
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _offline(get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=title,
                                   oauth2_redirect_url="/docs/oauth2-redirect",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon.png",
                                   swagger_ui_parameters={"validatorUrl": None}))  # no call to a validator site

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _offline(get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=title,
                                       redoc_js_url=f"{ASSETS}/redoc-offline.js",
                                       redoc_favicon_url=f"{ASSETS}/favicon.png", with_google_fonts=False))

    redoc_js: list[bytes] = []

    @app.get(f"{ASSETS}/redoc-offline.js", include_in_schema=False)
    def redoc_bundle() -> Response:
        """ReDoc's bundle with its footer logo pointed at a local image instead of its CDN."""
        if not redoc_js:
            text = (assets_dir() / "redoc.standalone.js").read_bytes()
            redoc_js.append(text.replace(REDOC_LOGO.encode(), f"{ASSETS}/favicon.png".encode()))
        return Response(redoc_js[0], media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page
