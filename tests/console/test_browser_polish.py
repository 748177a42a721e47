"""What a ward trips on at shift change, in a real browser (Playwright driving Debian's Chromium) against the
real stack (`wardwatch up`): a sensor-off tile's text is shown whole at desktop and tablet width; opening a
patient view reads (and audits) the thresholds once; an observation is entered with a date and time, bounded
as the API bounds it. Screenshots go to ``$WARDWATCH_SCREENSHOTS`` (a folder of the test run by default)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from wardwatch.stack.up import StackOptions, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.servers]

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("WARDWATCH_SCREENSHOTS") or Path(tempfile.gettempdir()) / "wardwatch-screenshots")

SCENARIO = """
name = "console-polish"
description = "A pulse oximeter taken off (technical alarm, no SpO2 or pulse value) and a quiet patient."
seed = 7
duration = "30m"
ward = "ward-a"

[[patients]]
id = "p-s01"
gateway = "gw-home-s1"
baseline = { hr = 66, spo2 = 97 }
devices = [
  { kind = "heart_rate_strap", id = "hrs-s01" },
  { kind = "pulse_oximeter", id = "plx-s01" },
]
events = [
  { kind = "sensor_off", device = "plx-s01", at = "10s", duration = "20m" },
]

[[patients]]
id = "p-s02"
gateway = "gw-home-s2"
baseline = { hr = 74, spo2 = 96 }
devices = [
  { kind = "heart_rate_strap", id = "hrs-s02" },
  { kind = "pulse_oximeter", id = "plx-s02" },
]
events = []
"""

# every reading's age line on the board that does not fit its box (cut off, or spilling out of the tile)
CUT_OFF = """() => [...document.querySelectorAll("a.tile .vital-age")].filter((e) => {
  const box = e.closest(".vital").getBoundingClientRect();
  const text = e.getBoundingClientRect();
  return e.scrollWidth > e.clientWidth + 1 || e.scrollHeight > e.clientHeight + 1 || text.right > box.right + 1
    || text.bottom > box.bottom + 1;
}).map((e) => e.closest("a.tile").dataset.patient + ": " + e.textContent)"""

LOCAL_MINUTE = """(offsetMs) => {
  const d = new Date(Date.now() + offsetMs);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}T${two(d.getHours())}:${two(d.getMinutes())}`;
}"""

FETCH_JSON = "async (path) => (await fetch(path)).json()"


@asynccontextmanager
async def _chromium() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            yield browser
        finally:
            await browser.close()


async def _thresholds_reads(page: Any, patient: str) -> int:
    audit = await page.evaluate(FETCH_JSON, f"/api/audit?patient={patient}&limit=1000")
    return sum(1 for entry in audit["entries"] if entry["action"] == "thresholds_read")


async def _open_patient(page: Any, patient: str) -> None:
    """Open the patient view from the board and wait until the trends and the thresholds panel are drawn."""
    await page.goto(page.url.split("#")[0] + "#/board")
    await page.locator(f'a.tile[data-patient="{patient}"]').click()
    await page.wait_for_selector("#thresholds-form")
    await page.wait_for_selector(".charts canvas")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup installs it)")
async def test_board_text_whole_thresholds_read_once_per_view_observations_dated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WARDWATCH_SCREENSHOTS", raising=False)  # a knob of the tests, not of the services
    scenario = tmp_path / "console-polish.toml"
    scenario.write_text(SCENARIO)
    options = StackOptions(state=tmp_path / "state", scenario=str(scenario), speed=4.0, quiet=True)
    errors: list[str] = []
    os.makedirs(SCREENSHOTS, exist_ok=True)
    async with running_stack(options, echo=lambda line: None) as stack, _chromium() as browser:
        password = (Path(stack.summary["state"]) / "api-password").read_text().strip()
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        await page.goto(stack.summary["console"])
        await page.get_by_label("User name").fill(stack.summary["api_user"])
        await page.get_by_label("Password").fill(password)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_selector("#board")

        # the sensor-off tile: "no value" and the reading's age, whole, at desktop and tablet width
        sensor_off = page.locator('a.tile[data-patient="p-s01"] .vital[data-signal="spo2"] .vital-age')
        await sensor_off.filter(has_text="no value").wait_for(timeout=150_000)
        await page.locator('a.tile[data-patient="p-s02"] .vital[data-signal="spo2"] .vital-value').wait_for()
        for width, name in ((1280, "desktop"), (768, "tablet")):
            await page.set_viewport_size({"width": width, "height": 860})
            await page.wait_for_function("w => document.documentElement.clientWidth <= w", arg=width)
            assert await page.evaluate(CUT_OFF) == [], f"text cut off on the board at {name} width"
            assert "no value" in await sensor_off.inner_text()
            await page.screenshot(path=str(SCREENSHOTS / f"console-tile-sensor-off-{name}.png"))
        await page.set_viewport_size({"width": 1280, "height": 860})

        # opening a patient view reads the thresholds once (the chart and the panel share the answer)
        before = await _thresholds_reads(page, "p-s02")
        await _open_patient(page, "p-s02")
        assert await _thresholds_reads(page, "p-s02") == before + 1
        await _open_patient(page, "p-s02")
        assert await _thresholds_reads(page, "p-s02") == before + 2

        # observations taken at a date and time: not in the future, not older than the API accepts
        form = page.locator("#obs-form")
        taken_at = form.get_by_label("Taken at (date and time)")
        assert await taken_at.get_attribute("type") == "datetime-local"
        error = page.locator("#obs-error")
        for offset_h, why in ((25, "too old"), (-1, "in the future")):
            await taken_at.fill(await page.evaluate(LOCAL_MINUTE, -offset_h * 3_600_000))
            await form.get_by_label("Respiratory rate (/min)").fill("18")
            await form.get_by_role("button", name="Record observations").click()
            await page.locator("#obs-error", has_text=why).wait_for()
            assert await taken_at.get_attribute("aria-invalid") == "true"
        stored = await page.evaluate(FETCH_JSON, "/api/patients/p-s02/observations")
        assert stored["observations"] == []  # nothing reached the API
        yesterday = await page.evaluate(LOCAL_MINUTE, -20 * 3_600_000)  # 20 h ago: most often yesterday
        await taken_at.fill(yesterday)
        await form.get_by_label("Respiratory rate (/min)").fill("18")
        await form.get_by_role("button", name="Record observations").click()
        await page.locator("#obs-done", has_text="Recorded").wait_for()
        assert await error.inner_text() == ""
        expected = await page.evaluate("(local) => new Date(local).getTime()", yesterday)
        stored = await page.evaluate(FETCH_JSON, "/api/patients/p-s02/observations")
        assert [entry["taken_at"] for entry in stored["observations"]] == [expected]
        for width, name in ((1280, "desktop"), (768, "tablet")):
            await page.set_viewport_size({"width": width, "height": 860})
            await form.screenshot(path=str(SCREENSHOTS / f"console-observation-date-{name}.png"))
    assert errors == []
