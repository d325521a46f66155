"""The browser pages the API serves from folders of static/: the Swagger UI and the playground.

Each page's files are vendored or ours, served from this origin only, under a
Content-Security-Policy that allows nothing from another host.
"""

from pathlib import Path

import falcon

# Swagger UI needs inline styles; everything else comes from this origin only.
SWAGGER_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; frame-ancestors 'none'"
)

# The playground runs only its own scripts and style sheets: no inline script or style at all.
# (Its editor lives in a shadow root, where CodeMirror's styles are constructed style sheets.)
# Images are artifacts fetched with the token and shown from blob: URLs; fetch() reaches this
# origin only.
PLAYGROUND_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

# Fixed here rather than guessed with `mimetypes`, whose answers depend on the machine's
# /etc/mime.types; openapi.yaml lists these. LICENSE, NOTICE, VERSION and .txt are plain text.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
PLAIN_TEXT = "text/plain; charset=utf-8"


class StaticPageResource:
    """Serves the files of one folder at ``/{name}/``: ``index.html`` for the folder itself, and
    only names that exist in the folder (no subfolders, nothing outside it)."""

    def __init__(self, folder: Path, url: str, csp: str, title: str):
        self._files = {path.name: path for path in folder.iterdir() if path.is_file()}
        self._url = url
        self._csp = csp
        self._title = title

    def on_get_redirect(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPMovedPermanently(self._url)

    def on_get(self, req: falcon.Request, resp: falcon.Response, filename: str = "") -> None:
        path = self._files.get(filename or "index.html")
        if path is None:
            raise falcon.HTTPNotFound(
                description=f"No file named {filename!r} in the {self._title}."
            )
        resp.content_type = MEDIA_TYPES.get(path.suffix, PLAIN_TEXT)
        resp.data = path.read_bytes()
        resp.set_header("Content-Security-Policy", self._csp)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "no-referrer")
        resp.cache_control = ["public", "max-age=3600"]
