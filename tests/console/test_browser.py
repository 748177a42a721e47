"""The console in a real browser (Playwright driving Debian's Chromium) against the real stack (`wardwatch up`:
broker, InfluxDB, alerting, ingest, simulator, gateways, console).

A nurse logs in, mutes the tones, and a severe desaturation in the simulator turns its tile red and sounds
and notifies anyway (a high alarm breaks through a mute) within 5 s of the page; she acknowledges it with a
note, sees it in the audit log, opens the patient's trends; a console left untouched logs itself out.
Sound and notifications are observed through page hooks on WebAudio and ``Notification``. Screenshots go to
``$WARDWATCH_SCREENSHOTS`` (``docs/img`` refreshes the README's; default: a temporary folder). Look at them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from tests.console import browsing

from wardwatch.console.app import serve_console
from wardwatch.console.config import AlertingSettings, ConsoleConfig
from wardwatch.core.servers import free_port
from wardwatch.core.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.servers]

SCENARIO = browsing.scenario(
    "console-browser",
    "A severe desaturation (high), a tachycardia (medium), a probe off (technical), a quiet patient.",
    11,
    browsing.home_patient(
        "p-b01",
        "gw-home-b1",
        hr=88,
        spo2=96,
        events=(
            '{ kind = "desaturation", at = "90s", onset = "20s", duration = "6m", recovery = "60s", target = 72 }',
        ),
    ),
    browsing.home_patient(
        "p-b03",
        "gw-home-b3",
        hr=92,
        spo2=95,
        events=(
            '{ kind = "tachycardia", at = "30s", onset = "20s", duration = "10m", recovery = "60s", target = 145 }',
        ),
    ),
    browsing.home_patient(
        "p-b04",
        "gw-home-b4",
        hr=66,
        spo2=97,
        events=('{ kind = "sensor_off", device = "plx-b04", at = "40s", duration = "10m" }',),
    ),
    browsing.home_patient("p-b02", "gw-home-b2", hr=71, spo2=97),
)


def _pages(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@browsing.NEEDS_CHROMIUM
async def test_a_nurse_sees_hears_and_acknowledges_a_desaturation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[str] = []
    async with browsing.stack_and_browser(tmp_path, monkeypatch, SCENARIO, speed=4.0) as (stack, browser):
        url = stack.summary["console"]
        password = browsing.api_password(stack)
        page = await browsing.new_page(browser, errors)
        await browsing.log_in(page, url, stack.summary["api_user"], password)
        await page.wait_for_selector('a.tile[data-patient="p-b02"]', timeout=60_000)
        await page.get_by_role("button", name="Mute 2 min").click()  # a high alarm must break through
        assert await page.get_by_role("button", name="Mute 2 min").count() == 0

        tile = page.locator('a.tile[data-patient="p-b01"][data-level="high"]')
        await tile.wait_for(timeout=180_000)
        pages = Path(stack.summary["pages"])

        def high_page() -> dict[str, Any] | None:
            return next(
                (
                    p
                    for p in _pages(pages)
                    if p["page"].get("patient") == "p-b01" and p["page"].get("priority") == "high"
                ),
                None,
            )

        await wait_for(lambda: high_page() is not None, 30, what="the high page of p-b01")
        paged = high_page()
        assert paged is not None
        first_high = await page.evaluate("window.__firstHigh")
        assert first_high["patient"] == "p-b01"
        assert first_high["t"] - paged["received"] * 1000 <= 5000  # red on the board within 5 s of the page
        await wait_for(
            lambda: page.evaluate("window.__tones.filter(t => t.freq === 880).length > 0"), 5, what="a high tone"
        )
        notifications = await page.evaluate("window.__notifications")
        assert any(n["title"] == "HIGH alarm: p-b01" for n in notifications), notifications
        assert "HIGH" in (await tile.inner_text()).upper()  # text as well as colour
        assert await page.get_by_role("button", name="Mute 2 min").count() == 1  # the mute was broken
        # the tachycardia is a medium (yellow) alarm, the probe taken off a technical (cyan) one
        await page.locator('a.tile[data-patient="p-b03"][data-level="medium"]').wait_for(timeout=120_000)
        await page.locator('a.tile[data-patient="p-b04"][data-level="technical"]').wait_for(timeout=120_000)
        order = await page.eval_on_selector_all("a.tile", "tiles => tiles.map(t => t.dataset.patient)")
        assert order[:3] == ["p-b01", "p-b03", "p-b04"]  # by acuity: high, medium, technical, then the rest
        await page.wait_for_timeout(300)  # (a still image of a settled board, not a condition)
        await page.screenshot(path=str(browsing.SCREENSHOTS / "console-board.png"))
        assert await page.evaluate(browsing.CONTRAST_FAILURES) == []  # WCAG AA on the board: alarms of every colour

        # acknowledge with a note (a note is required)
        await page.get_by_role("link", name="Alarms").click()
        row = page.locator("tr", has_text="p-b01").filter(has_text="High").first
        await row.get_by_role("button", name="Acknowledge").click()
        dialog = page.locator("#action-dialog")
        await dialog.get_by_role("button", name="Acknowledge").click()
        assert await page.locator("#action-error").inner_text() == "A note is required."
        await page.get_by_label("Note (required)").fill("Phoned the patient; oxygen on, probe reseated")
        await dialog.get_by_role("button", name="Acknowledge").click()
        await dialog.wait_for(state="hidden")
        await page.get_by_role("tab", name="Acknowledged").click()
        acknowledged = page.locator("tr", has_text="p-b01").filter(has_text="Acknowledged").first
        await acknowledged.wait_for()
        assert stack.summary["api_user"] in await acknowledged.inner_text()  # who (and when)
        await page.screenshot(path=str(browsing.SCREENSHOTS / "console-alarms.png"))
        assert await page.evaluate(browsing.CONTRAST_FAILURES) == []

        # the acknowledgement is in the audit log, with the note
        await page.get_by_role("link", name="Audit").click()
        entry = page.locator('tr[data-action="acknowledge"]', has_text="p-b01").first
        await entry.wait_for()
        assert "Phoned the patient" in await entry.inner_text()
        await page.screenshot(path=str(browsing.SCREENSHOTS / "console-audit.png"))

        # the patient's trends: charts with the threshold drawn
        await page.get_by_role("link", name="Ward board").click()
        await page.locator('a.tile[data-patient="p-b01"]').click()
        await page.wait_for_selector('.chart[data-signal="spo2"] canvas')
        await page.get_by_role("button", name="24 hours").click()
        await page.wait_for_selector('.chart[data-signal="spo2"] canvas')
        await page.get_by_role("button", name="1 hour").click()
        await page.wait_for_selector('.chart[data-signal="spo2"] canvas')
        assert "Source: raw" in await page.locator("#trend-source").inner_text()
        await page.wait_for_timeout(300)  # (a still image once the chart has drawn)
        await page.screenshot(path=str(browsing.SCREENSHOTS / "console-patient.png"), full_page=True)

        # a tablet in portrait: the board fits without scrolling sideways
        tablet = await browsing.new_page(browser, errors, width=768, height=1024)
        await browsing.log_in(tablet, url, stack.summary["api_user"], password)
        await tablet.wait_for_selector('a.tile[data-patient="p-b01"]')
        assert await tablet.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        await tablet.keyboard.press("Tab")  # keyboard: from the view's content, the most acute patient first
        assert await tablet.evaluate("document.activeElement.dataset.patient") == "p-b01"
        await tablet.keyboard.press("Enter")
        await tablet.wait_for_selector('h1:has-text("Patient p-b01")')
        await tablet.go_back()
        await tablet.wait_for_selector('a.tile[data-patient="p-b01"]')
        await tablet.screenshot(path=str(browsing.SCREENSHOTS / "console-tablet.png"))

        # a console nobody touches logs itself out (a second console with a short idle limit)
        idle_config = ConsoleConfig(
            ward="ward-a",
            port=free_port(),
            idle_logout_s=6,
            alerting=AlertingSettings(url=stack.summary["api"]),
        )
        async with serve_console(idle_config) as port:
            idle = await browsing.new_page(browser, errors)
            started = time.monotonic()
            await browsing.log_in(idle, f"http://127.0.0.1:{port}/", stack.summary["api_user"], password)
            notice = idle.locator("#login-notice")
            await notice.wait_for(timeout=30_000)
            assert "without activity" in await notice.inner_text()
            assert await idle.evaluate(browsing.CONTRAST_FAILURES) == []  # the login page too
            assert time.monotonic() - started >= 6
            status = await idle.evaluate("fetch('/api/session').then(r => r.status)")
            assert status == 401
    assert errors == []
