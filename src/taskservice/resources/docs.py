"""The API's own description: the hand-written OpenAPI spec and the vendored Swagger UI."""

import json
from pathlib import Path

import falcon
import yaml

# Swagger UI needs inline styles; everything else comes from this origin only.
SWAGGER_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; frame-ancestors 'none'"
)

# Fixed here rather than guessed with `mimetypes`, whose answers depend on the machine's
# /etc/mime.types; openapi.yaml lists these. LICENSE, NOTICE and VERSION are plain text.
SWAGGER_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
PLAIN_TEXT = "text/plain; charset=utf-8"


class OpenApiResource:
    def __init__(self, spec_path: Path):
        self._yaml = spec_path.read_bytes()
        self._json = json.dumps(yaml.safe_load(self._yaml)).encode()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "application/yaml"
        resp.data = self._yaml

    def on_get_json(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._json


class SwaggerUiResource:
    """Serves the files of the vendored page; only names that exist in its folder are served."""

    def __init__(self, folder: Path):
        self._files = {path.name: path for path in folder.iterdir() if path.is_file()}

    def on_get_redirect(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPMovedPermanently("/swagger/")

    def on_get(self, req: falcon.Request, resp: falcon.Response, filename: str = "") -> None:
        path = self._files.get(filename or "index.html")
        if path is None:
            raise falcon.HTTPNotFound(description=f"No file named {filename!r} in the Swagger UI.")
        resp.content_type = SWAGGER_MEDIA_TYPES.get(path.suffix, PLAIN_TEXT)
        resp.data = path.read_bytes()
        resp.set_header("Content-Security-Policy", SWAGGER_CSP)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.cache_control = ["public", "max-age=3600"]
