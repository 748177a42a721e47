"""Review notes, device history and the handover in a real browser (Playwright, Debian's Chromium) against the
real stack (`wardwatch up`: broker, InfluxDB, alerting, ingest, simulator, gateways, console).

A charge nurse acknowledges and then resolves a simulated desaturation's alarm with notes, writes a review
note on the patient view, sees the patient's kit in the device history, and finds the alarm (who acknowledged,
who resolved with which note) and the review note in the handover, which prints without the console's chrome,
and the note in the audit log. Screenshots go to ``$WARDWATCH_SCREENSHOTS`` (``docs/img`` refreshes the docs';
default: a temporary folder). Look at them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.console import browsing

pytestmark = [pytest.mark.slow, pytest.mark.servers]

SCENARIO = browsing.scenario(
    "console-handover",
    "A desaturation (high alarm) and a quiet patient.",
    13,
    browsing.home_patient(
        "p-h01",
        "gw-home-h1",
        hr=84,
        spo2=96,
        events=(
            '{ kind = "desaturation", at = "30s", onset = "15s", duration = "20m", recovery = "60s", target = 72 }',
        ),
    ),
    browsing.home_patient("p-h02", "gw-home-h2", hr=70, spo2=97),
)
ACK_NOTE = "Phoned the patient: oxygen on, probe reseated"
RESOLVE_NOTE = "Ambulance called; GP informed"
REVIEW_NOTE = "Video review: breathless on exertion, chest clear. Recheck SpO2 at 18:00."


async def _act_on_alarm(page: Any, tab: str, state: str, action: str, note: str) -> None:
    """On the alarm list's ``tab``, ``action`` (Acknowledge/Resolve) p-h01's high alarm with ``note``."""
    await page.get_by_role("link", name="Alarms").click()
    await page.get_by_role("tab", name=tab).click()
    row = page.locator("tr", has_text="p-h01").filter(has_text=state).first
    await row.get_by_role("button", name=action).click()
    dialog = page.locator("#action-dialog")
    await page.get_by_label("Note (required)").fill(note)
    await dialog.get_by_role("button", name=action).click()
    await dialog.wait_for(state="hidden")


@browsing.NEEDS_CHROMIUM
async def test_notes_device_history_and_handover_in_the_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[str] = []
    async with browsing.stack_and_browser(tmp_path, monkeypatch, SCENARIO, speed=4.0) as (stack, browser):
        page = await browsing.new_page(browser, errors, height=900)
        await browsing.log_in(page, stack.summary["console"], stack.summary["api_user"], browsing.api_password(stack))
        await page.locator('a.tile[data-patient="p-h01"][data-level="high"]').wait_for(timeout=180_000)

        # the desaturation's alarm: acknowledged, then resolved, each with a note
        await _act_on_alarm(page, "Active", "High", "Acknowledge", ACK_NOTE)
        await _act_on_alarm(page, "Acknowledged", "Acknowledged", "Resolve", RESOLVE_NOTE)
        await page.get_by_role("tab", name="Resolved").click()
        await page.locator("tr", has_text="p-h01").filter(has_text="Resolved").first.wait_for()

        # the patient view: a review note (required) and the device history with the kit
        await page.get_by_role("link", name="Ward board").click()
        await page.locator('a.tile[data-patient="p-h01"]').click()
        await page.get_by_role("button", name="Add note").click()
        assert await page.locator("#note-error").inner_text() == "A note is required."
        await page.get_by_label("New note (required)").fill(REVIEW_NOTE)
        await page.get_by_role("button", name="Add note").click()
        note = page.locator("#notes li.note", has_text=REVIEW_NOTE)
        await note.wait_for()
        assert stack.summary["api_user"] in await note.inner_text()  # the author
        for device in ("hrs-h01", "plx-h01"):
            await page.locator(f'#device-history tr[data-device="{device}"]', has_text="in use").wait_for()
        await page.locator("#device-history table.device-events", has_text="connected").wait_for(timeout=30_000)
        await page.locator("#notes").scroll_into_view_if_needed()
        await page.screenshot(path=str(browsing.SCREENSHOTS / "console-patient-notes.png"), full_page=True)
        assert await page.evaluate(browsing.CONTRAST_FAILURES) == []  # WCAG AA: notes and device history
        # the note survives a reload (stored, not only drawn)
        await page.reload()
        await page.locator("#notes li.note", has_text=REVIEW_NOTE).wait_for()

        # the handover: the alarm with who acknowledged and who resolved with the note; the review note
        await page.get_by_role("link", name="Handover").click()
        alarm = page.locator('#handover tr[data-outcome="resolved"]', has_text="p-h01").first
        await alarm.wait_for()
        text = await alarm.inner_text()
        user = stack.summary["api_user"]
        assert f"Acknowledged by {user}" in text
        assert f"Resolved by {user}" in text
        assert RESOLVE_NOTE in text
        await page.locator("#handover-notes").locator("xpath=..").locator("td", has_text=REVIEW_NOTE).wait_for()
        await page.screenshot(path=str(browsing.SCREENSHOTS / "console-handover.png"), full_page=True)
        assert await page.evaluate(browsing.CONTRAST_FAILURES) == []  # WCAG AA on the handover
        await page.emulate_media(media="print")
        assert not await page.locator("#topbar").is_visible()  # printed without the console's chrome
        assert not await page.get_by_role("button", name="Print").is_visible()
        await page.screenshot(path=str(browsing.SCREENSHOTS / "console-handover-print.png"), full_page=True)
        await page.emulate_media(media="screen")

        # the note in the audit log, with its text
        await page.get_by_role("link", name="Audit").click()
        entry = page.locator('tr[data-action="note_written"]', has_text="p-h01").first
        await entry.wait_for()
        assert REVIEW_NOTE in await entry.inner_text()
    assert errors == []
