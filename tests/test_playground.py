"""The playground page at /playground/, used the way a person would, in headless chromium.

Against the real service (API and worker, Docker sandboxes): register and log in on the page,
write a matplotlib program in the editor, give it stdin and a CSV file (the browser's file
picker), run it with Ctrl-Enter, watch its output stream in, see its plot (an artifact fetched
with the token and shown from a blob: URL), reload the page and get the task back, all without
a request to any other host. A screenshot is left in tests/artifacts/playground.png for a
person to look at.
"""

from __future__ import annotations

import math
import re
import time
import uuid

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.browser import browser_context, ensure_chromium
from tests.conftest import TEST_JWT_SECRET
from tests.service import ROOT, running_service

SCREENSHOTS = ROOT / "tests" / "artifacts"
# The plot takes about 2 s on a quiet machine, and took 25 s on two cores under other tests'
# load (a 1-minute load of 30). The task may take this long, and the test waits a little longer.
PLOT_TIMEOUT_SECONDS = 240
RUN_TIMEOUT_MS = (PLOT_TIMEOUT_SECONDS + 60) * 1000

# Reads the file given with the page's file picker (pandas) and the stdin typed in the page,
# and leaves its plot in ./out/.
PLOT = """\
import os
import sys

import matplotlib.pyplot as plt
import pandas as pd

print("MARKER starting", flush=True)
print("MARKER to stderr", file=sys.stderr, flush=True)
label = sys.stdin.read().strip()
table = pd.read_csv("waves.csv")
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(table["x"], table["y"], label=label)
ax.set_title("MARKER")
ax.legend()
os.makedirs("out", exist_ok=True)
fig.savefig("out/plot.png", dpi=80)
print("MARKER saved", len(table), "rows of", label)
"""


@pytest.fixture(scope="module")
def chromium_path() -> str:
    return ensure_chromium()


@pytest.fixture(scope="module")
def service(config, tmp_path_factory):
    with running_service(
        config,
        TEST_JWT_SECRET,
        tmp_path_factory.mktemp("playground"),
        QUEUE_NAME=f"{config.queue_name}.playground",
        # Room for the plot on a loaded machine (below).
        TASK_TIMEOUT_MAX=str(PLOT_TIMEOUT_SECONDS),
    ) as (base, _api, _worker):
        # The worker reports each language's version once it has asked the image; the page
        # shows what GET /languages says when it loads. python's answers at once; python-data's
        # (numpy, pandas, matplotlib and scipy imported) may take minutes on a loaded machine.
        deadline = time.monotonic() + 120
        while not all(entry["version"] for entry in languages(base) if entry["name"] == "python"):
            assert time.monotonic() < deadline, languages(base)
            time.sleep(0.5)
        yield base


def languages(base: str) -> list[dict]:
    return requests.get(f"{base}/languages", timeout=10).json()["languages"]


@pytest.fixture
def browser(chromium_path, service, tmp_path):
    """A page in a fresh profile, the requests it made, and what it said on its console."""
    requested: list[str] = []
    console: list[str] = []
    with browser_context(
        chromium_path,
        service,
        tmp_path / "profile",
        requested,
        viewport={"width": 1400, "height": 900},
    ) as context:
        context.on("request", lambda request: requested.append(request.url))
        page = context.new_page()
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
        yield page, requested, console


def write_code(page: Page, code: str) -> None:
    """Replace the editor's text as typing would, but without the editor's auto-indent and
    bracket closing, which would change the program."""
    page.locator("#editor .cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(code)


def editor_text(page: Page) -> str:
    return page.locator("#editor .cm-content").evaluate(
        "node => [...node.querySelectorAll('.cm-line')].map(line => line.textContent).join('\\n')"
    )


def test_log_in_run_a_plot_and_see_it(browser, service, tmp_path):
    page, requested, console = browser
    marker = f"plot-{uuid.uuid4().hex[:8]}"
    code = PLOT.replace("MARKER", marker)
    csv = tmp_path / "waves.csv"
    rows = [f"{x / 10},{math.sin(x / 10) * math.exp(-x / 60):.6f}" for x in range(120)]
    csv.write_text("x,y\n" + "\n".join(rows) + "\n")

    page.goto(f"{service}/playground/")
    expect(page.locator("#editor .cm-editor")).to_be_visible()
    page.fill("#username", f"u{uuid.uuid4().hex[:12]}")
    page.fill("#password", "correct horse")
    page.click("#register")  # registers, then logs in
    expect(page.locator("#signed-in")).to_be_visible()
    expect(page.locator("#run")).to_be_enabled()

    # The languages come from GET /languages, with the versions the worker found.
    expect(page.locator("#language option[value='python']")).to_have_text(
        re.compile(r"^python \d+\.\d+")
    )
    expect(page.locator("#language option[value='python-data']")).to_have_count(1)
    page.select_option("#language", "python-data")
    write_code(page, code)
    assert editor_text(page) == code.rstrip("\n") or editor_text(page) == code
    page.locator("#stdin-box summary").click()
    page.fill("#stdin", "damped waves\n")
    page.fill("#timeout", str(PLOT_TIMEOUT_SECONDS))
    page.set_input_files("#files", csv)
    expect(page.locator("#file-list")).to_have_text(re.compile(r"waves\.csv \(\d"))
    page.locator("#editor .cm-content").press("Control+Enter")

    expect(page.locator("#task-id")).to_have_text(re.compile(r"[0-9a-f-]{36}"))
    task_id = page.locator("#task-id").inner_text()
    expect(page.locator("#status")).to_have_attribute(
        "data-status", "succeeded", timeout=RUN_TIMEOUT_MS
    )
    expect(page.locator("#stdout")).to_have_text(
        f"{marker} starting\n{marker} saved 120 rows of damped waves\n"
    )
    expect(page.locator("#stderr")).to_have_text(f"{marker} to stderr\n")
    # Both came live, as events of the stream, before the stored result replaced them.
    expect(page.locator("#stdout")).to_have_attribute("data-chunks", re.compile(r"^[1-9]"))
    expect(page.locator("#stderr")).to_have_attribute("data-chunks", re.compile(r"^[1-9]"))
    # The limits that applied, from the result.
    expect(page.locator("#limits dd[data-fact='exit code']")).to_have_text("0")
    expect(page.locator("#limits dd[data-fact='time limit']")).to_have_text(
        f"{PLOT_TIMEOUT_SECONDS} s"
    )
    expect(page.locator("#limits dd[data-fact='memory limit']")).to_have_text(
        re.compile(r"\d+ MiB")
    )

    # The plot: shown inline from a blob: URL, and decoded (a broken image has no width).
    image = page.locator("#images img[data-artifact='plot.png']")
    expect(image).to_have_attribute("src", re.compile(r"^blob:"))
    page.wait_for_function(
        "() => { const img = document.querySelector(\"#images img[data-artifact='plot.png']\");"
        " return img && img.complete && img.naturalWidth > 0; }"
    )
    assert image.evaluate("img => img.naturalWidth") == 480  # 6 in at 80 dpi
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "playground.png"), full_page=True)

    # The task is in the list of earlier tasks; a reload keeps the session (sessionStorage)
    # and re-opens the task named in the address: its code, its output and its plot.
    expect(page.locator(f"#tasks button[data-task-id='{task_id}']")).to_contain_text("python-data")
    page.locator("#language").select_option("python")
    write_code(page, "print('something else')\n")
    page.fill("#timeout", "")
    page.reload()
    expect(page.locator("#who")).not_to_be_empty()
    expect(page.locator("#task-id")).to_have_text(task_id)
    expect(page.locator("#status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#language")).to_have_value("python-data")
    expect(page.locator("#stdout")).to_contain_text(f"{marker} saved")
    expect(page.locator("#stdin")).to_have_value("damped waves\n")
    expect(page.locator("#timeout")).to_have_value(str(PLOT_TIMEOUT_SECONDS))
    page.wait_for_function(
        "() => { const img = document.querySelector(\"#images img[data-artifact='plot.png']\");"
        " return img && img.complete && img.naturalWidth > 0; }"
    )
    assert editor_text(page).rstrip("\n") == code.rstrip("\n")

    own = f"{service}/"
    assert f"{service}/task" in requested and f"{service}/task/{task_id}/events" in requested
    left_the_origin = [url for url in requested if not url.startswith((own, "blob:", "data:"))]
    assert left_the_origin == []
    # The page works under its own Content-Security-Policy: nothing was refused, nothing threw.
    assert [line for line in console if "error" in line.split(":")[0]] == [], console
