"""The console's record of alarms resolved by hand while present (static/watched.js), run in Node.

The board's tile shows such a watch instead of "No open alarm" (board.js); which watch a patient has comes
from the live snapshot's ``watched`` and the stream's ``alarm`` events. The DOM part is not exercised here.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from wardwatch.console.app import STATIC_DIR

NODE = shutil.which("node")

SCRIPT = """
const w = await import(process.argv[1]);
const seen = {};
w.loadWatches({ watched: [
  { alarm_id: "a-1", patient: "p-1", state: "resolved", actor: "ann", realarm_at: 2000, rule: "spo2_low" },
  { alarm_id: "a-2", patient: "p-1", state: "resolved", actor: "bob", realarm_at: 1000, rule: "hr_high" },
  { alarm_id: "a-3", patient: "p-2", state: "resolved", actor: "cat", realarm_at: 3000, rule: "spo2_low" },
] });
seen.first = w.watchOf("p-1").alarm_id;
seen.text = w.watchText(w.watchOf("p-1"));
w.noteAlarm({ alarm_id: "a-2", patient: "p-1", state: "resolved", realarm_at: null });  // the watch ended
seen.afterEnd = w.watchOf("p-1").alarm_id;
w.noteAlarm({ alarm_id: "a-9", patient: "p-3", state: "resolved", actor: "dan", realarm_at: 4000 });
seen.resolvedWhilePresent = w.watchOf("p-3").alarm_id;
w.noteAlarm({ alarm_id: "a-8", patient: "p-4", state: "resolved", realarm_at: null });
seen.plainResolve = w.watchOf("p-4");
w.forgetPatient("p-2");
seen.discharged = w.watchOf("p-2");
w.loadWatches({});  // a snapshot from a service without watches
seen.empty = w.watches.size;
console.log(JSON.stringify(seen));
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_watched_js_tracks_watches_from_the_snapshot_and_alarm_events() -> None:
    assert NODE is not None
    module = (STATIC_DIR / "watched.js").as_uri()
    result = subprocess.run(
        [NODE, "--input-type=module", "-e", SCRIPT, module], capture_output=True, text=True, check=True, timeout=30
    )
    seen = json.loads(result.stdout)
    assert seen["first"] == "a-2"  # the one that re-alarms first
    assert seen["text"].startswith("Resolved by bob while present — re-alarms ")
    assert seen["text"].endswith(" unless it clears")
    assert seen["afterEnd"] == "a-1"
    assert seen["resolvedWhilePresent"] == "a-9"
    assert seen["plainResolve"] is None
    assert seen["discharged"] is None
    assert seen["empty"] == 0
