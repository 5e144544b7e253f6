"""The preview: each kept green main's built game served at `/preview/<sha>/`, and the list of them as JSON.

The game is agent-written code, so it is served to run in a box of its own:

* `Content-Security-Policy: sandbox allow-scripts` (and the page's `<iframe sandbox="allow-scripts">`): the
  game runs in an opaque origin, even when opened in a tab of its own, so it shares nothing with the
  dashboard's origin (no storage, no token, no same-origin reads); `connect-src 'none'` stops its fetch,
  XHR, WebSocket and beacons before they are sent; no forms, no plugins, no frames, no navigating the top.
* An opaque origin loads the game's module scripts in CORS mode, so the files carry
  `Access-Control-Allow-Origin: *`: the build is readable like the dashboard's own static files; the API
  never carries that header.
* Paths: only plain names (`[A-Za-z0-9._@+~-]`, no leading dot, no `..`, no percent-escape), opened without
  following links under the kept dist/; types from a fixed table, `nosniff`.
* Who may read: the API's rules (the Host check first; open on a loopback bind, the token off it). An iframe
  cannot send a bearer token, so `/api/previews` hands out URLs of the form `/preview/<sha>.<key>/`, the key an
  HMAC of the sha under the token, which is accepted in its place.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from agentswarm.dashboard.app import DashboardApp
from agentswarm.dashboard.web import ApiError, int_param
from agentswarm.reconcile.page import screenshots_root
from agentswarm.reconcile.previews import list_previews, preview_files, previews_root
from agentswarm.sandbox.files import read_range

PREFIX = "/preview/"
PATH = re.compile(r"/preview/([0-9a-f]{40}|[0-9a-f]{64})(?:\.([0-9a-f]{32}))?(/.*)?")
SEGMENT = re.compile(r"[A-Za-z0-9_@+~-][A-Za-z0-9._@+~-]{0,127}")
MAX_FILE = 64 << 20
CSP = ("sandbox allow-scripts; default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; font-src 'self' data:; media-src 'self' data: blob:; worker-src 'self' blob:; "
       "connect-src 'none'; frame-src 'none'; object-src 'none'; form-action 'none'; base-uri 'none'; "
       "frame-ancestors 'self'")
TYPES = {
    "html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "mjs": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8", "json": "application/json", "map": "application/json",
    "txt": "text/plain; charset=utf-8", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
    "gif": "image/gif", "webp": "image/webp", "avif": "image/avif", "svg": "image/svg+xml", "ico": "image/x-icon",
    "wasm": "application/wasm", "woff": "font/woff", "woff2": "font/woff2", "ttf": "font/ttf", "otf": "font/otf",
    "mp3": "audio/mpeg", "ogg": "audio/ogg", "wav": "audio/wav", "glsl": "text/plain; charset=utf-8",
}


@dataclass
class FileReply:
    """A preview file (or a redirect to the directory's URL), with the headers that box it in."""

    status: int
    data: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def preview_key(app: DashboardApp, sha: str) -> str:
    """The per-sha key that stands for the token in an iframe's URL ("" when no token is set)."""
    if not app.token:
        return ""
    return hmac.new(app.token.encode(), f"preview {sha}".encode(), hashlib.sha256).hexdigest()[:32]


def preview_url(app: DashboardApp, sha: str) -> str:
    """The URL the page loads sha's preview from (with the key when a token is set)."""
    key = preview_key(app, sha)
    return f"{PREFIX}{sha}{'.' + key if key else ''}/"


def serve_file(app: DashboardApp, raw_path: str, authorization: str | None) -> FileReply:
    """GET of a path under /preview/ (after the Host check): the file, a redirect to `<dir>/`, or ApiError."""
    m = PATH.fullmatch(raw_path)
    if m is None:
        raise ApiError(404, "no such preview")
    sha, key, rest = m.groups()
    keyed = bool(key) and hmac.compare_digest(key, preview_key(app, sha) or "-")
    if key and not keyed:
        raise ApiError(404, "no such preview")  # a key, when there is one, must be this sha's
    if not keyed and not app.may_read(authorization):
        raise ApiError(401, "reading a preview off loopback needs the token, or the URL /api/previews gives")
    dist = preview_files(previews_root(app.settings.hub_path), sha)
    if dist is None:
        raise ApiError(404, f"no preview of {sha[:10]} is kept")
    if rest is None:
        return FileReply(308, b"", "text/plain", {"Location": raw_path + "/"})
    parts = rest[1:].split("/")
    if parts[-1] == "":
        parts[-1] = "index.html"
    if not all(SEGMENT.fullmatch(p) and ".." not in p for p in parts):
        raise ApiError(404, "no such file in the preview")
    data = read_range(dist, "/".join(parts), 0, MAX_FILE + 1)
    if data is None or len(data) > MAX_FILE:
        raise ApiError(404, "no such file in the preview")
    ctype = TYPES.get(parts[-1].rsplit(".", 1)[-1].lower() if "." in parts[-1] else "", "application/octet-stream")
    return FileReply(200, data, ctype, {"Content-Security-Policy": CSP, "Access-Control-Allow-Origin": "*",
                                        "Cache-Control": "private, max-age=300"})


def previews(app: DashboardApp, db: Session, params: dict[str, str]) -> dict:
    """The kept previews of green mains, newest first: sha, time, size, URL, and the screenshot if one is kept."""
    settings = app.settings
    limit = int_param(params, "limit", max(1, settings.reconcile_previews_keep), 1, 100)
    shots = screenshots_root(settings.hub_path)
    kept = list_previews(previews_root(settings.hub_path), limit)
    return {"keep": settings.reconcile_previews_keep, "previews": [
        {"sha": p["sha"], "at": p["at"], "files": p.get("files"), "bytes": p.get("bytes"),
         "url": preview_url(app, p["sha"]),
         "screenshot": f"{p['sha']}.png" if (shots / f"{p['sha']}.png").is_file() else None} for p in kept]}


def is_preview_path(path: str) -> bool:
    """The request is for a preview file (served by `serve_file`, not the static page or the API)."""
    return path.startswith(PREFIX) or path == PREFIX.rstrip("/")


__all__ = ["CSP", "FileReply", "is_preview_path", "preview_key", "preview_url", "previews", "serve_file"]
