"""The tile's NEWS2 line (static/news2.js) in Chromium, on the console's own files served to the page."""

from __future__ import annotations

import mimetypes
from typing import Any

from tests.console import browsing

from wardwatch.console.app import STATIC_DIR

ORIGIN = "http://console.test"

pytestmark = [browsing.NEEDS_CHROMIUM]


async def _serve_static(route: Any) -> None:
    path = route.request.url.removeprefix(ORIGIN + "/static/").split("?")[0]
    file = (STATIC_DIR / path).resolve()
    if not file.is_relative_to(STATIC_DIR.resolve()) or not file.is_file():
        await route.fulfill(status=404, body="")
        return
    kind = "text/javascript" if file.suffix == ".js" else mimetypes.guess_type(file.name)[0] or "text/plain"
    await route.fulfill(status=200, body=file.read_bytes(), content_type=kind)


LINE = """async (news2) => {
  const { news2Line } = await import("/static/news2.js");
  const line = news2Line(news2);
  return { kind: line.dataset.news2, text: line.textContent };
}"""


async def test_a_tile_with_nothing_recent_to_score_shows_no_score_not_a_low_risk_zero() -> None:
    # the first minute of a patient's wearables: every parameter missing; a "NEWS2 0 Low" would read as low risk
    nothing = {"score": 0, "full": False, "band": "low", "missing": ["respiration", "spo2"], "points": {}}
    some = {"score": 1, "full": False, "band": "low", "missing": ["respiration"], "points": {"spo2": 1}}
    async with browsing.browser() as chromium:
        page = await chromium.new_page()
        await page.route(ORIGIN + "/static/**", _serve_static)
        await page.route(
            ORIGIN + "/", lambda route: route.fulfill(status=200, body="<!doctype html>", content_type="text/html")
        )
        await page.goto(ORIGIN + "/")
        shown = await page.evaluate(LINE, nothing)
        assert shown["kind"] == "none"
        assert "NEWS2 0" not in shown["text"]
        assert "no recent parameters" in shown["text"]
        shown = await page.evaluate(LINE, some)
        assert shown["kind"] == "partial"
        assert shown["text"].startswith("NEWS2 1")
