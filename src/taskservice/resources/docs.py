"""The API's own description: the hand-written OpenAPI spec (its console: static_pages.py)."""

import json
from pathlib import Path

import falcon
import yaml


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
