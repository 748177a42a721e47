"""What the console's browser tests share: Chromium (Debian's, driven by Playwright), the real stack running a
scenario, logging in, page hooks, the screenshot folder and the WCAG contrast check.

Screenshots go to ``$WARDWATCH_SCREENSHOTS`` (``docs/img`` refreshes the docs') or to a folder of the test run, so
that running the tests never edits the repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from wardwatch.console.bench import CHROMIUM_ARGS
from wardwatch.stack.up import Stack, StackOptions, running_stack

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = Path("/usr/bin/chromium")
NEEDS_CHROMIUM = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup installs it)")
SCREENSHOTS = Path(os.environ.get("WARDWATCH_SCREENSHOTS") or Path(tempfile.gettempdir()) / "wardwatch-screenshots")

# Page hooks: every oscillator started (its frequency) and every notification shown, with the time.
HOOKS = """
window.__tones = [];
window.__notifications = [];
window.__firstHigh = null;
const originalCreateOscillator = AudioContext.prototype.createOscillator;
AudioContext.prototype.createOscillator = function () {
  const oscillator = originalCreateOscillator.call(this);
  const start = oscillator.start.bind(oscillator);
  oscillator.start = (...args) => {
    window.__tones.push({ t: Date.now(), freq: oscillator.frequency.value });
    return start(...args);
  };
  return oscillator;
};
class RecordingNotification {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.__notifications.push({ t: Date.now(), title, body: options && options.body }); }
  close() {}
}
window.Notification = RecordingNotification;
new MutationObserver(() => {
  if (window.__firstHigh === null) {
    const tile = document.querySelector('a.tile[data-level="high"]');
    if (tile) window.__firstHigh = { t: Date.now(), patient: tile.dataset.patient };
  }
}).observe(document, { subtree: true, childList: true, attributes: true });
"""

# WCAG 2.x contrast of every visible text node's element against its composited background: the failures.
CONTRAST_FAILURES = """
() => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const channel = (v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  function background(element) {
    const layers = [];
    for (let e = element; e; e = e.parentElement) {
      const [r, g, b, a = 1] = parse(getComputedStyle(e).backgroundColor);
      if (a > 0) layers.push([r, g, b, a]);
      if (a >= 1) break;
    }
    let colour = [255, 255, 255];
    for (const [r, g, b, a] of layers.reverse()) colour = [r, g, b].map((v, i) => v * a + colour[i] * (1 - a));
    return colour;
  }
  const failures = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const text = walker.currentNode.nodeValue.trim();
    const element = walker.currentNode.parentElement;
    if (!text || !element || !element.checkVisibility() || element.closest(".sr-only, .skip-link")) continue;
    const style = getComputedStyle(element);
    const [r, g, b, a = 1] = parse(style.color);
    const back = background(element);
    const fore = [r, g, b].map((v, i) => v * a + back[i] * (1 - a));
    const [l1, l2] = [luminance(fore), luminance(back)].sort((x, y) => y - x);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) failures.push(`${text.slice(0, 30)}: ${ratio.toFixed(2)}`);
  }
  return failures;
}
"""


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Any]:
    """A headless Debian Chromium, closed on exit."""
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def stack_and_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: str, *, speed: float = 1.0
) -> AsyncIterator[tuple[Stack, Any]]:
    """The real stack (`wardwatch up`) running ``scenario`` (a scenario file's TOML) and a Chromium, both stopped on
    exit; the screenshot folder exists."""
    # the services read WARDWATCH_* as configuration (a gateway refused `screenshots`): the folder is not theirs
    monkeypatch.delenv("WARDWATCH_SCREENSHOTS", raising=False)
    scenario_file = tmp_path / f"{tomllib.loads(scenario)['name']}.toml"
    scenario_file.write_text(scenario)
    options = StackOptions(state=tmp_path / "state", scenario=str(scenario_file), speed=speed, quiet=True)
    os.makedirs(SCREENSHOTS, exist_ok=True)
    async with running_stack(options, echo=lambda line: None) as stack, browser() as chromium:
        yield stack, chromium


def api_password(stack: Stack) -> str:
    """The password of the stack's API user (`stack.summary["api_user"]`)."""
    return (Path(stack.summary["state"]) / "api-password").read_text().strip()


def _console_error(errors: list[str], kind: str, text: str) -> None:
    """A browser console error, except the network log of an expected 401 (asking for a session before login)."""
    if kind == "error" and "status of 401" not in text:
        errors.append(f"console {kind}: {text}")


async def new_page(chromium: Any, errors: list[str], *, width: int = 1180, height: int = 820) -> Any:
    """A page in a context of its own with `HOOKS`; its page errors and console errors are appended to ``errors``."""
    context = await chromium.new_context(viewport={"width": width, "height": height})
    await context.add_init_script(HOOKS)
    page = await context.new_page()
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda msg: _console_error(errors, msg.type, msg.text))
    return page


async def log_in(page: Any, url: str, user: str, password: str) -> None:
    """Open the console at ``url`` and log in; returns once the board shows."""
    await page.goto(url)
    await page.get_by_label("User name").fill(user)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_selector("#board")


async def add_viewer(stack: Stack, name: str, password: str) -> None:
    """A viewer account in the running stack's alerting service (its own CLI, as `wardwatch up` adds the nurse)."""
    config = Path(stack.summary["state"]) / "config" / "alerting.toml"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "wardwatch.core", "alerting", "user", "add", name, "--role", "viewer", "--config", str(config)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "WW_ALERTING_PASSWORD": password},
    )
    _, err = await process.communicate(password.encode() + b"\n")
    assert process.returncode == 0, err.decode()


def scenario(name: str, description: str, seed: int, *patients: str) -> str:
    """A scenario file's TOML: 30 minutes of ward-a with ``patients`` (:func:`home_patient` blocks)."""
    return (
        f'name = "{name}"\ndescription = "{description}"\nseed = {seed}\nduration = "30m"\nward = "ward-a"\n'
        + "".join(patients)
    )


def home_patient(patient: str, gateway: str, *, hr: int, spo2: int, events: tuple[str, ...] = ()) -> str:
    """A scenario's ``[[patients]]`` block: ``patient`` (``p-<n>``) at home behind ``gateway``, wearing a strap
    ``hrs-<n>`` and an oximeter ``plx-<n>``; ``events``: inline TOML tables."""
    n = patient.removeprefix("p-")
    listed = "".join(f"\n  {event}," for event in events) + ("\n" if events else "")
    return f"""
[[patients]]
id = "{patient}"
gateway = "{gateway}"
baseline = {{ hr = {hr}, spo2 = {spo2} }}
devices = [
  {{ kind = "heart_rate_strap", id = "hrs-{n}" }},
  {{ kind = "pulse_oximeter", id = "plx-{n}" }},
]
events = [{listed}]
"""
