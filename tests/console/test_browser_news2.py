"""NEWS2, manual observations and per-patient thresholds in a real browser (Playwright driving Debian's Chromium)
against the real stack (`wardwatch up`: broker, InfluxDB, alerting, ingest, simulator, gateways, console).

A charge nurse sees each tile's NEWS2 partial (only the wearables' HR and SpO2 are recent), enters a patient's
observations on the patient view (a value out of bounds is refused with the API's message) and sees NEWS2 turn
full on the patient view and on the tile; she changes a threshold with a reason (an out-of-range value is refused
with the API's message), finds the change in the audit log, and a viewer sees the thresholds read-only and no
observation form. Screenshots go to ``$WARDWATCH_SCREENSHOTS`` (``docs/img`` refreshes the docs'). Look at them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.console import browsing

pytestmark = [pytest.mark.slow, pytest.mark.servers]

SCENARIO = browsing.scenario(
    "console-news2",
    "Two patients without alarms whose NEWS2 the wearables can only score in part (0 and 2).",
    5,
    browsing.home_patient("p-n01", "gw-home-n1", hr=72, spo2=97),
    browsing.home_patient("p-n02", "gw-home-n2", hr=100, spo2=95),
)


@browsing.NEEDS_CHROMIUM
async def test_observations_make_news2_full_and_threshold_changes_are_bounded_and_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[str] = []
    async with browsing.stack_and_browser(tmp_path, monkeypatch, SCENARIO) as (stack, browser):
        url = stack.summary["console"]
        password = browsing.api_password(stack)
        page = await browsing.new_page(browser, errors)
        await browsing.log_in(page, url, stack.summary["api_user"], password)

        # the wearables score HR and SpO2 only: every tile shows a partial NEWS2 and what is missing
        # (the engine scores them from minute medians: the first complete minute)
        wearables_only = "missing RR, O₂, BP, ACVPU, Temp"
        partial = page.locator('a.tile[data-patient="p-n01"] .news2[data-news2="partial"]', has_text=wearables_only)
        await partial.wait_for(timeout=150_000)
        await page.locator(
            'a.tile[data-patient="p-n02"] .news2[data-news2="partial"]', has_text=wearables_only
        ).wait_for(timeout=30_000)
        # no alarm on either: the board's acuity order is NEWS2's (p-n02's pulse and SpO2 score 1 each)
        order = "tiles => tiles.map(t => t.dataset.patient)"
        assert await page.eval_on_selector_all("a.tile", order) == ["p-n02", "p-n01"]

        # the patient view: the score now, the parameters behind it, its history
        await page.locator('a.tile[data-patient="p-n01"]').click()
        now = page.locator('#news2-now[data-news2="partial"]')
        await now.wait_for(timeout=30_000)
        assert await page.locator('.params tr.param-missing[data-parameter="respiration"]').count() == 1
        await page.wait_for_selector("#news2-chart canvas")

        # a value out of bounds is refused with the API's message; nothing is stored
        form = page.locator("#obs-form")
        await form.get_by_label("Respiratory rate (/min)").fill("81")
        await form.get_by_role("button", name="Record observations").click()
        error = page.locator("#obs-error")
        await page.locator("#obs-error", has_text="respiration").wait_for()
        refused = await error.inner_text()
        assert "respiration" in refused
        assert "80" in refused
        assert await form.get_by_label("Respiratory rate (/min)").get_attribute("aria-invalid") == "true"

        # the nurse's observations complete the score: full on the patient view and on the tile, live
        await form.get_by_label("Respiratory rate (/min)").fill("22")
        await form.get_by_label("Consciousness (ACVPU)").select_option("A")
        await form.get_by_label("Supplemental oxygen").select_option("air")
        await form.get_by_label("Systolic BP (mmHg)").fill("124")
        await form.get_by_label("Temperature (°C)").fill("38.5")
        await form.get_by_label("Note (optional)").fill("after the video call")
        await form.get_by_role("button", name="Record observations").click()
        await page.locator("#obs-done", has_text="Recorded").wait_for()
        assert await error.inner_text() == ""
        await page.locator('#news2-now[data-news2="full"]').wait_for(timeout=15_000)
        await page.locator('.patient-head .news2[data-news2="full"]').wait_for(timeout=15_000)
        respiration = page.locator('.params tr[data-parameter="respiration"]')
        assert "nurse" in await respiration.inner_text()
        await page.locator("#news2-panel").get_by_role("button", name="1 h", exact=True).click()
        # the full score reaches the history once alerting has published it and ingest stored it
        await page.locator('#news2-history-source:not([data-full="0"])', has_text="every score").wait_for(
            timeout=40_000
        )
        await page.wait_for_timeout(300)  # (a still image once the panels have drawn)
        await page.locator("#news2-panel").screenshot(path=str(browsing.SCREENSHOTS / "console-news2.png"))
        assert await page.evaluate(browsing.CONTRAST_FAILURES) == []

        # thresholds: an out-of-range value is refused with the API's message, a valid one saved with a reason
        thresholds = page.locator("#thresholds-form")
        await thresholds.get_by_label("SpO₂ low", exact=True).fill("120")
        await thresholds.get_by_label("Reason for the change (required)").fill("COPD: target 88-92 %")
        await thresholds.get_by_role("button", name="Save thresholds").click()
        th_error = page.locator("#th-error")
        await page.locator("#th-error", has_text="spo2_low").wait_for()
        assert await th_error.inner_text() == "invalid thresholds: spo2_low: 120 is outside the allowed range 50..100"
        await thresholds.get_by_label("Rule profile").select_option("arrhythmia")
        reason = thresholds.get_by_label("Reason for the change (required)")
        await reason.focus()
        await page.keyboard.press("Tab")  # keyboard: from the reason to the save button
        assert await page.evaluate("document.activeElement.textContent") == "Save thresholds"
        spo2_low = thresholds.get_by_label("SpO₂ low", exact=True)
        await spo2_low.fill("88")
        await spo2_low.press("Enter")  # saved from the keyboard
        await page.locator("#th-done", has_text="Saved and audited").wait_for()
        effective = page.locator('#thresholds-form tr[data-setting="spo2_low"] .th-effective')
        assert (await effective.inner_text()).startswith("88")
        assert "override" in await effective.inner_text()
        await page.wait_for_timeout(300)
        await page.locator("#thresholds-panel").screenshot(path=str(browsing.SCREENSHOTS / "console-thresholds.png"))
        assert await page.evaluate(browsing.CONTRAST_FAILURES) == []

        # the change and the observations are in the audit log, with the reason
        await page.get_by_role("link", name="Audit").click()
        change = page.locator('tr[data-action="thresholds_set"]', has_text="p-n01").first
        await change.wait_for()
        assert "COPD: target 88-92 %" in await change.inner_text()
        assert "spo2_low — → 88" in await change.inner_text()  # what changed, from the audit entry's details
        recorded = page.locator('tr[data-action="observation_recorded"]', has_text="p-n01").first
        assert "respiration 22" in await recorded.inner_text()
        await page.screenshot(path=str(browsing.SCREENSHOTS / "console-news2-audit.png"))

        # the board: p-n01's full NEWS2 (RR 2 + temperature 1 = 3) on its tile, and it moved above p-n02's 2
        await page.get_by_role("link", name="Ward board").click()
        full = page.locator('a.tile[data-patient="p-n01"] .news2[data-news2="full"]')
        await full.wait_for(timeout=15_000)
        assert (await full.get_attribute("data-news2-score")) == "3"
        assert await page.eval_on_selector_all("a.tile", order) == ["p-n01", "p-n02"]
        await page.wait_for_timeout(300)
        await page.screenshot(path=str(browsing.SCREENSHOTS / "console-news2-board.png"))
        assert await page.evaluate(browsing.CONTRAST_FAILURES) == []

        # a viewer sees the thresholds read-only and has no observation form; at tablet width nothing overflows
        await browsing.add_viewer(stack, "vic", "viewer password 1")
        viewer = await browsing.new_page(browser, errors, width=768, height=1024)
        await browsing.log_in(viewer, url, "vic", "viewer password 1")
        await viewer.locator('a.tile[data-patient="p-n01"]').click()
        await viewer.locator('#thresholds-form tr[data-setting="spo2_low"]').wait_for()
        assert await viewer.locator("#thresholds-form input:not([disabled])").count() == 0
        assert await viewer.get_by_role("button", name="Save thresholds").count() == 0
        assert await viewer.locator("#obs-form").count() == 0
        assert "can view these but not change them" in await viewer.locator("#thresholds-panel").inner_text()
        assert await viewer.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        await viewer.screenshot(path=str(browsing.SCREENSHOTS / "console-news2-tablet.png"), full_page=True)
    # the browser logs the two refusals the test provoked (422: observation, 400: threshold), and nothing else
    provoked = ("status of 422 (Unprocessable Entity)", "status of 400 (Bad Request)")
    assert [e for e in errors if not e.endswith(provoked)] == []
    assert len(errors) == 2
