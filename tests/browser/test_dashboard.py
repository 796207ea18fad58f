"""The dashboard in headless chromium: submit, watch progress, cancel."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

ROW = 'tr[data-task-id="{}"]'
PROGRESS_OF = """([id]) => {
  const row = document.querySelector('tr[data-task-id="' + id + '"]');
  const bar = row && row.querySelector("[role=progressbar]");
  return bar ? Number(bar.getAttribute("aria-valuenow")) : -1;
}"""
PROGRESS_ABOVE = """([id, floor]) => {
  const row = document.querySelector('tr[data-task-id="' + id + '"]');
  const bar = row && row.querySelector("[role=progressbar]");
  return bar !== null && Number(bar.getAttribute("aria-valuenow")) > floor;
}"""
STATUS_IS = """([id, status]) => {
  const row = document.querySelector('tr[data-task-id="' + id + '"]');
  return row !== null && row.dataset.status === status;
}"""


async def submit(page, task_type: str, params: str) -> str:
    await page.select_option("#submit-type", task_type)
    await page.fill("#submit-params", params)
    await page.click("#submit-button")
    message = page.locator("#submit-message")
    await message.filter(has_text="Submitted").wait_for()
    text = await message.text_content()
    return text.removeprefix("Submitted ").removesuffix(".")


async def test_dashboard_submits_shows_progress_and_cancels(
    browser, server_url, artifacts
):
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(server_url)
    await page.wait_for_selector('#connection[data-state="live"]')
    await page.wait_for_selector('#submit-type option[value="sleep"]', state="attached")

    task_id = await submit(page, "sleep", '{"seconds": 3, "steps": 30}')
    await page.wait_for_function(PROGRESS_ABOVE, arg=[task_id, 0.0])
    first = await page.evaluate(PROGRESS_OF, [task_id])
    await page.wait_for_function(PROGRESS_ABOVE, arg=[task_id, first])
    later = await page.evaluate(PROGRESS_OF, [task_id])
    long_id = await submit(page, "sleep", '{"seconds": 60, "steps": 60}')
    await page.wait_for_function(STATUS_IS, arg=[long_id, "running"])
    await page.locator(ROW.format(long_id)).locator("button.cancel").click()
    await page.wait_for_function(STATUS_IS, arg=[long_id, "cancelled"])
    await page.wait_for_function(STATUS_IS, arg=[task_id, "completed"], timeout=15000)
    await page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)

    assert 0.0 < first < later <= 1.0
    assert await page.evaluate(PROGRESS_OF, [task_id]) == 1.0
    row = page.locator(ROW.format(task_id))
    assert "slept_s" in await row.locator("td.detail").text_content()
    assert await row.locator("td.duration").text_content() != ""
    assert await page.locator(ROW.format(long_id)).locator("button.cancel").is_hidden()
    assert errors == []


async def test_dashboard_filters_and_shows_errors(browser, server_url):
    page = await browser.new_page()
    await page.goto(server_url)
    await page.wait_for_selector('#connection[data-state="live"]')
    await page.wait_for_selector('#submit-type option[value="fail"]', state="attached")

    failed_id = await submit(page, "fail", '{"message": "Shown in the table."}')
    await page.wait_for_function(STATUS_IS, arg=[failed_id, "failed"])
    added_id = await submit(page, "add", '{"a": 2, "b": 3}')
    await page.wait_for_function(STATUS_IS, arg=[added_id, "completed"])
    await page.select_option("#filter-status", "failed")

    failed_row = page.locator(ROW.format(failed_id))
    assert "Shown in the table." in await failed_row.locator("td.detail").text_content()
    assert await failed_row.is_visible()
    assert await page.locator(ROW.format(added_id)).is_hidden()
    await page.fill("#submit-params", "{not json")
    await page.click("#submit-button")
    await page.locator("#submit-message.error").wait_for()
    assert "JSON" in await page.locator("#submit-message").text_content()
