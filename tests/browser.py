"""Debian's headless chromium, driven by Playwright, for the tests of the browser pages.

Playwright drives the system browser (scripts/ensure-browser.sh installs it); it never
downloads one of its own. Every request a page makes is recorded, and any to another host is
refused before it leaves the machine.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, sync_playwright

from tests.service import ROOT

# Only what a fresh, headless, offline run needs: no GPU, no QUIC, and none of the browser's
# own background traffic (component updates, sync, first-run pages).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root, where chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


def ensure_chromium() -> str:
    subprocess.run([ROOT / "scripts" / "ensure-browser.sh"], check=True)
    path = shutil.which("chromium")
    assert path, "scripts/ensure-browser.sh ran but chromium is not on PATH"
    return path


@contextlib.contextmanager
def browser_context(
    chromium_path: str, origin: str, profile: Path, requested: list[str], **options
) -> Iterator[BrowserContext]:
    """A fresh profile in ``profile``; the URL of every request goes into ``requested``, and a
    request to anything but ``origin`` is aborted."""
    own_origin = urlsplit(origin)[:2]

    def route(route, request):
        requested.append(request.url)
        if urlsplit(request.url)[:2] == own_origin:
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),  # the fresh --user-data-dir
            executable_path=chromium_path,
            headless=True,
            args=CHROMIUM_FLAGS,
            **options,
        )
        try:
            context.set_default_timeout(TIMEOUT_MS)
            context.route("**/*", route)
            yield context
        finally:
            context.close()
