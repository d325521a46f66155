"""The playground's files as the API serves them: media types, and a policy that lets the page
load nothing but its own files (the page in a real browser: tests/test_playground.py)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from tests.service import ROOT

FOLDER = ROOT / "static" / "playground"
EXPECTED_TYPES = {
    "/playground/": "text/html; charset=utf-8",
    "/playground/index.html": "text/html; charset=utf-8",
    "/playground/editor.js": "text/javascript; charset=utf-8",
    "/playground/playground.js": "text/javascript; charset=utf-8",
    "/playground/api.js": "text/javascript; charset=utf-8",
    "/playground/task-events.js": "text/javascript; charset=utf-8",
    "/playground/files-out.js": "text/javascript; charset=utf-8",
    "/playground/playground.css": "text/css; charset=utf-8",
    "/playground/editor.js.LICENSE.txt": "text/plain; charset=utf-8",
}


def policy(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.mark.parametrize("path", sorted(EXPECTED_TYPES))
def test_each_file_with_its_type_and_the_policy(client, path):
    response = client.simulate_get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == EXPECTED_TYPES[path]
    assert response.headers["x-content-type-options"] == "nosniff"
    name = path.removeprefix("/playground/") or "index.html"
    assert response.content == (FOLDER / name).read_bytes()
    csp = policy(response.headers["content-security-policy"])
    assert csp["default-src"] == ["'self'"]
    # Scripts and styles from this origin only: nothing inline, nothing evaluated.
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"]  # fetch() reaches this API only
    assert csp["img-src"] == ["'self'", "blob:", "data:"]  # artifacts come as blob: URLs
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    assert not any("unsafe" in value for values in csp.values() for value in values)


def test_the_folder_redirects_and_nothing_else_is_served(client):
    redirect = client.simulate_get("/playground")
    assert redirect.status_code == 301 and redirect.headers["location"] == "/playground/"
    for path in (
        "/playground/nothing.js",
        "/playground/..%2Fopenapi.yaml",
        "/playground/%2E%2E",
        "/playground/playground-editor",
    ):
        response = client.simulate_get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/json")
        assert response.json["title"] and response.json["description"]


class _References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.inline_styles = 0
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.urls += [attributes[key] for key in ("src", "href") if attributes.get(key)]
        self.inline_styles += tag == "style" or "style" in attributes
        self.inline_scripts += any(key.startswith("on") for key in attributes)
        self._in_script = tag == "script"

    def handle_data(self, data):
        self.inline_scripts += self._in_script and bool(data.strip())

    def handle_endtag(self, tag):
        self._in_script = False


def test_the_page_refers_only_to_its_own_files(client):
    page = _References()
    page.feed(client.simulate_get("/playground/").text)
    assert page.inline_scripts == 0 and page.inline_styles == 0
    external = [url for url in page.urls if re.match(r"^[a-z]+:|^//", url) and url != "data:,"]
    assert external == []
    own = [url for url in page.urls if not url.startswith(("/", "data:"))]
    assert sorted(own) == ["editor.js", "playground.css", "playground.js"]
    for url in own:
        assert client.simulate_get(f"/playground/{url}").status_code == 200
    # The link to the other page of the service.
    assert "/swagger/" in page.urls


def test_every_module_the_page_imports_is_served(client):
    imported, seen = ["playground.js"], set()
    while imported:
        name = imported.pop()
        seen.add(name)
        response = client.simulate_get(f"/playground/{name}")
        assert response.status_code == 200, name
        for module in re.findall(r'^import .* from "\./([\w.-]+)";$', response.text, re.M):
            if module not in seen:
                imported.append(module)
    assert seen == {"playground.js", "api.js", "task-events.js", "files-out.js"}
