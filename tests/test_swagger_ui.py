"""The Swagger UI page at /swagger/, used the way a person would, in Debian's headless chromium.

Playwright drives the system browser (scripts/ensure-browser.sh installs it); it never
downloads one of its own. The page must list every operation of the spec, take a real token
in the Authorize dialog, and run POST /task with "Try it out" against the running API, all
without a request to any other host.
"""

from __future__ import annotations

import re

import pytest
import requests
import yaml
from playwright.sync_api import expect

from tests.browser import browser_context, ensure_chromium
from tests.conftest import TEST_JWT_SECRET
from tests.service import (
    ROOT,
    ApiUser,
    Process,
    delete_queues,
    free_port,
    service_env,
    wait_for_api,
)

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def chromium_path() -> str:
    return ensure_chromium()


@pytest.fixture(scope="module")
def service(config, tmp_path_factory):
    """The API alone: the page only submits a task, it need not run."""
    port = free_port()
    env = service_env(
        config, TEST_JWT_SECRET, QUEUE_NAME=f"{config.queue_name}.swagger", PORT=str(port)
    )
    api = Process("api", env, tmp_path_factory.mktemp("swagger") / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_api(base, api)
        yield base
    finally:
        api.stop()
        delete_queues(config.amqp_url, env["QUEUE_NAME"])


@pytest.fixture
def browser_page(chromium_path, service, tmp_path):
    """A page in a fresh profile; every request it makes is recorded, and any to another host
    is refused before it leaves the machine."""
    requested: list[str] = []
    with browser_context(chromium_path, service, tmp_path / "profile", requested) as context:
        yield context.new_page(), requested


def _spec_operations() -> set[tuple[str, str]]:
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    return {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    }


def test_authorize_and_submit_a_task(browser_page, service):
    page, requested = browser_page
    user = ApiUser(service)  # registered and logged in with POST /register and POST /login
    token = user.headers["Authorization"].removeprefix("Bearer ")

    page.goto(f"{service}/swagger/")
    summaries = page.locator(".opblock .opblock-summary")
    expect(summaries.first).to_be_visible()
    listed = {
        (
            summary.locator(".opblock-summary-method").inner_text().strip(),
            summary.locator(".opblock-summary-path").get_attribute("data-path"),
        )
        for summary in summaries.all()
    }
    assert listed == _spec_operations()

    # Authorize: paste the token alone; the page adds "Bearer ".
    page.locator(".scheme-container button.authorize").click()
    dialog = page.locator(".dialog-ux .modal-ux")
    dialog.locator("input").fill(token)
    dialog.locator("button.modal-btn.authorize").click()
    expect(dialog.locator("button.modal-btn.auth.btn-done")).to_be_visible()
    dialog.locator("button.modal-btn.auth.btn-done").click()
    expect(dialog).to_have_count(0)

    submit_task = page.locator("#operations-tasks-submitTask")
    submit_task.locator(".opblock-summary").click()
    # swagger-initializer.js opens every operation with "Try it out" already on, so the
    # button offers to cancel it and the body is editable at once.
    expect(submit_task.locator("button.try-out__btn")).to_have_text("Cancel")
    body = submit_task.locator("textarea.body-param__text")
    expect(body).to_be_editable()
    assert '"code": "print(6*7)"' in body.input_value()  # the spec's first example, as is
    # Left empty, so that pressing Execute again submits a new task rather than a repeat.
    expect(submit_task.locator("tr[data-param-name='Idempotency-Key'] input")).to_have_value("")
    submit_task.locator("button.execute").click()

    live = submit_task.locator(".live-responses-table .response")
    expect(live.locator(".response-col_status")).to_have_text("201")
    response_body = live.locator(".response-col_description pre").first
    expect(response_body).to_contain_text('"status": "queued"')
    task_id = UUID.search(response_body.inner_text()).group()

    # The task the page submitted is the user's own, so it was sent with the pasted token.
    status = requests.get(f"{service}/status/{task_id}", headers=user.headers, timeout=10)
    assert status.status_code == 200 and status.json()["task_id"] == task_id

    own = f"{service}/"
    assert requested, "no request was recorded"
    assert [url for url in requested if not url.startswith(own)] == []
    assert f"{service}/openapi.yaml" in requested and f"{service}/task" in requested
