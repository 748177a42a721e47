"""Issue 13's "done when", as a newcomer does it: `bash scripts/up`, open the printed URL, log in with the printed
credentials, watch the demo's desaturation, tachycardia and sensor-off alarms appear, acknowledge and resolve them
— without reading any code.

``scripts/up`` itself runs (its set-up step is idempotent and takes under a second once done), with one extra
argument, ``--state``, so the test's state stays in its own folder. Everything the test uses comes from what
``up`` prints: the console's URL, user and password, and the ground-truth file that says which demo patient has
which event. Chromium is driven by Playwright like a person would: by labels, roles and visible text.
Screenshots go to ``$WARDWATCH_SCREENSHOTS`` (``docs/img`` refreshes the docs'; default: a temporary folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wardwatch.core.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.servers]

playwright_api = pytest.importorskip("playwright.async_api")

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("WARDWATCH_SCREENSHOTS") or Path(tempfile.gettempdir()) / "wardwatch-screenshots")
# the demo's three paging events, and what a nurse reads in the alarm's text for each
DEMO_EVENTS = {
    "desaturation": re.compile(r"SpO2 \d+ % below \d+ %"),
    "tachycardia": re.compile(r"HR \d+ /min above \d+ /min"),
    "sensor_off": re.compile(r"sensor off"),
}
CONSOLE_LINE = re.compile(
    r"^\s*console\s+(?P<url>https?://\S+)\s+user\s+(?P<user>\S+)\s+password\s+(?P<password>\S+)\s*$"
)
GROUND_TRUTH_LINE = re.compile(r"^\s*ground truth\s+(?P<path>\S+)\s*$")
SCENARIO_LINE = re.compile(r"^\s*scenario\s+(?P<text>.+)$")
READY_LINE = "Ctrl-C stops everything."
# The open-alarm count in the navigation when the first alarm reaches the board (it must not lag behind it).
HOOKS = """
window.__countAtFirstAlarm = null;
new MutationObserver(() => {
  if (window.__countAtFirstAlarm === null && document.querySelector('a.tile:not([data-level="none"])')) {
    window.__countAtFirstAlarm = document.getElementById("alarm-count").textContent;
  }
}).observe(document, { subtree: true, childList: true, attributes: true });
"""


@dataclass
class Up:
    """`bash scripts/up` running: what it has printed so far."""

    process: asyncio.subprocess.Process
    lines: list[str]

    def printed(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """The first printed line matching ``pattern`` (the test fails, showing the output, if none does)."""
        for line in self.lines:
            if found := pattern.match(line):
                return found
        raise AssertionError(f"`scripts/up` printed no line like {pattern.pattern!r}:\n" + "\n".join(self.lines))


@contextlib.asynccontextmanager
async def _scripts_up(state: Path) -> AsyncIterator[Up]:
    """``bash scripts/up --state STATE`` until it says it is up; Ctrl-C (SIGINT) on exit, as a person stops it."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        str(REPO / "scripts" / "up"),
        "--state",
        str(state),
        cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group: Ctrl-C reaches it and nothing else
    )
    up = Up(process, [])

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            up.lines.append(line.decode(errors="replace").rstrip("\n"))

    reader = asyncio.create_task(read())
    try:

        def ready() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"`scripts/up` exited ({process.returncode}):\n" + "\n".join(up.lines))
            return READY_LINE in up.lines

        await wait_for(ready, 120, what="`scripts/up` to say it is up", max_interval=0.2)
        yield up
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        await reader
    assert process.returncode == 0, "\n".join(up.lines)
    assert up.lines[-1] == "wardwatch up: stopped"


def _demo_patients(ground_truth: Path) -> dict[str, str]:
    """Which patient has which of the demo's paging events (from the simulator's ground truth)."""
    if not ground_truth.exists():
        return {}
    events = [json.loads(line) for line in ground_truth.read_text().splitlines() if line.strip()]
    return {e["event"]: e["patient"] for e in events if e["event"] in DEMO_EVENTS and e["should_page"]}


async def _shot(page: Any, name: str) -> None:
    await page.wait_for_timeout(300)  # (a still image once the view has drawn, not a condition)
    await page.screenshot(path=str(SCREENSHOTS / name))


async def _act(page: Any, row: Any, action: str, note: str) -> None:
    """Click ``action`` on an alarm's row, write the note, confirm; the dialog closes."""
    await row.get_by_role("button", name=action).click()
    dialog = page.locator("#action-dialog")
    await dialog.get_by_label("Note (required)").fill(note)
    await dialog.get_by_role("button", name=action).click()
    await dialog.wait_for(state="hidden")
    assert await page.locator("#action-error").inner_text() == ""


def _alarm_row(page: Any, patient: str) -> Any:
    return page.locator("table.alarms tbody tr").filter(has=page.get_by_role("link", name=patient, exact=True))


@pytest.mark.timeout(420)
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup installs it)")
async def test_a_newcomer_runs_up_logs_in_and_handles_the_demo_alarms(tmp_path: Path) -> None:
    errors: list[str] = []
    os.makedirs(SCREENSHOTS, exist_ok=True)
    async with _scripts_up(tmp_path / "state") as up, playwright_api.async_playwright() as playwright:
        started = time.monotonic()
        console = up.printed(CONSOLE_LINE)
        ground_truth = Path(up.printed(GROUND_TRUTH_LINE)["path"])
        await wait_for(lambda: len(_demo_patients(ground_truth)) == len(DEMO_EVENTS), 30, what="the demo's events")
        patients = _demo_patients(ground_truth)

        # the summary says what the demo will show: the newcomer knows what to watch for
        said = up.printed(SCENARIO_LINE)["text"]
        assert all(word in said for word in ("desaturation", "sensor off", "tachycardia")), said

        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        await context.add_init_script(HOOKS)
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.on(
            "console",
            lambda m: errors.append(m.text) if m.type == "error" and "status of 401" not in m.text else None,
        )

        # open the printed URL, log in with the printed credentials
        await page.goto(console["url"])
        await page.get_by_label("User name").fill(console["user"])
        await page.get_by_label("Password").fill(console["password"])
        # the login page shows only the login: no navigation, no "Log out" or "Connecting…" of a session
        assert not await page.locator("#topbar").is_visible()
        await _shot(page, "newcomer-login.png")
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_selector("#board")
        assert await page.get_by_role("button", name="Log out").is_visible()

        # the three alarms appear on the board, each tile saying its priority in words
        appeared: dict[str, float] = {}
        for event, patient in patients.items():
            tile = page.locator(f'a.tile[data-patient="{patient}"]').filter(has_text=DEMO_EVENTS[event])
            await tile.wait_for(timeout=150_000)
            appeared[event] = round(time.monotonic() - started, 1)
            assert re.search(r"\b(HIGH|MEDIUM|TECHNICAL|LOW)\b", (await tile.inner_text()).upper()), event
        await _shot(page, "newcomer-board.png")
        assert await page.evaluate("window.__countAtFirstAlarm") not in (None, "")  # counted as it showed

        # the alarm list: each alarm's text says what it is
        await page.get_by_role("link", name="Alarms").click()
        await page.get_by_role("tab", name="Active").wait_for()
        for event, patient in patients.items():
            row = _alarm_row(page, patient).filter(has_text=DEMO_EVENTS[event]).first
            await row.wait_for()
        await _shot(page, "newcomer-alarms.png")

        # acknowledge each with a note: it moves to "Acknowledged", with who did it
        for event, patient in patients.items():
            row = _alarm_row(page, patient).filter(has_text=DEMO_EVENTS[event]).first
            await _act(page, row, "Acknowledge", f"{event}: phoned {patient}, on my way")
        await page.get_by_role("tab", name="Acknowledged").click()
        for event, patient in patients.items():
            row = _alarm_row(page, patient).filter(has_text=DEMO_EVENTS[event]).first
            await row.wait_for()
            assert console["user"] in await row.inner_text()
        await _shot(page, "newcomer-acknowledged.png")

        # resolve each with a note (the dialog warns that the condition is still there): listed as resolved, by whom
        for event, patient in patients.items():
            row = _alarm_row(page, patient).filter(has_text=DEMO_EVENTS[event]).first
            await row.get_by_role("button", name="Resolve").click()
            hint = page.locator("#action-hint")
            assert await hint.is_visible()
            assert "still present" in await hint.inner_text()
            if event == "desaturation":
                await _shot(page, "newcomer-resolve-dialog.png")
            await page.locator("#action-dialog").get_by_role("button", name="Cancel").click()
            await _act(page, row, "Resolve", f"{event}: seen by the doctor, handled")
            await row.wait_for(state="detached")
        await page.get_by_role("tab", name="Resolved").click()
        for event, patient in patients.items():
            row = _alarm_row(page, patient).filter(has_text=DEMO_EVENTS[event]).first
            await row.wait_for()
            text = await row.inner_text()
            assert "Resolved" in text, text
            assert console["user"] in text, text
        await _shot(page, "newcomer-resolved.png")

        # the audit view has both actions of each alarm, with the notes
        await page.get_by_role("link", name="Audit").click()
        for patient in patients.values():
            for action, note in (("acknowledge", "on my way"), ("resolve", "handled")):
                entry = page.locator(f'tr[data-action="{action}"]', has_text=patient).filter(has_text=note)
                await entry.first.wait_for()
                assert console["user"] in await entry.first.inner_text()
        await _shot(page, "newcomer-audit.png")
        await browser.close()
    print(json.dumps({"alarm_on_board_s_after_up": appeared, "test_s": round(time.monotonic() - started, 1)}))
    assert errors == []
