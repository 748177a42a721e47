"""The local page receiver of ``wardwatch up``: prints every page and appends it to ``pages.jsonl``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web


class PageLog:
    """The local page receiver: a webhook endpoint that prints every page and appends it to a file."""

    def __init__(self, path: Path, echo: Callable[[str], None]) -> None:
        self.path = path
        self.echo = echo
        self.received = 0

    async def handle(self, request: web.Request) -> web.Response:
        """Store one page (any JSON body) and answer 200."""
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        destination = request.match_info.get("destination", "?")
        entry = {"received": time.time(), "destination": destination, "page": body}
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")
        self.received += 1
        self.echo(_page_line(destination, body))
        return web.json_response({"status": "ok"})


def _page_line(destination: str, body: Any) -> str:
    page = body.get("page", body) if isinstance(body, dict) else {}
    if not isinstance(page, dict):
        page = {}
    priority = str(page.get("priority", "?")).upper()
    state = page.get("state", "")
    text = page.get("text") or page.get("summary") or page.get("rule", "")
    return f"PAGE -> {destination:15} [{priority:6}] {page.get('patient', '?'):8} {state:12} {text}"
