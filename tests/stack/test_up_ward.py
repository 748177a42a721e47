"""`wardwatch up --scenario ward` (the README's 24-bed demo) pages only what its ground truth says (issue #18).

The stack runs the shipped ``ward`` scenario (8 bedside gateways of 3 beds: 6 continuous devices each,
within a Raspberry Pi's 7 connection slots) at ``SPEED`` x for ``SIMULATED_MIN`` simulated minutes,
then every page the page receiver got is held against the simulator's ground truth
(``ground-truth.jsonl``, scenario time mapped to wall time as the pipeline runs ``SPEED`` x faster):

* a physiological page needs a ``should_page`` clinical event of that patient whose window (plus
  ``PAGE_GRACE_S`` for confirmation delays) holds the page's time;
* a later escalation step belongs to its alarm (escalation timeouts run on wall time);
* a technical page needs a technical event of that patient (sensor off, out of range, battery) in
  its window: before issue #18 the ward's 27 devices that never got a connection slot paged "no data
  (disconnected)" without any;
* every ``should_page`` clinical event that ended within the run has a first-step page (technical
  ones are listed: the engine's technical timers run on wall time, the scenario ``SPEED`` x faster);
* no page concerns a gateway (an over-capacity operator alarm): every device has a slot.

Also runnable on a finished ``wardwatch up`` state folder to measure a longer run::

    .venv/bin/python tests/stack/test_up_ward.py STATE_FOLDER SPEED [RUN_S]   # prints the score as JSON

(``RUN_S``: wall seconds the run lasted after the scenario started; events not over by then are not due.)
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from wardwatch.alerting.engine import RULES
from wardwatch.core.schema import AlarmCategory
from wardwatch.core.servers import wait_for
from wardwatch.firmware_sim.scenario import load_scenario
from wardwatch.stack.errors import StackError
from wardwatch.stack.up import Stack, StackOptions, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.servers]

SPEED: Final = 4.0
SIMULATED_MIN: Final = 12.0  # events start at 4 min; by 12 min a sensor off, two bradycardias and three
# desaturations have paged (one bradycardia is over: it must have), and out-of-range, motion, low-perfusion
# and short sensor-off episodes have happened (none may page a nurse)
PAGE_GRACE_S: Final = 30.0  # wall seconds a page may come after its event's (compressed) window ended


def _rule(dedup_key: str) -> str:
    rule = dedup_key.split("/")[-1]
    return max((name for name in RULES if rule.startswith(name)), key=len, default=rule)


@dataclass
class WardScore:
    """Pages of a ward run against its ground truth."""

    pages: int = 0  # distinct page ids (active pages)
    matched: int = 0
    unexplained: list[str] = field(default_factory=list)  # page lines without a ground-truth event
    technical_beyond_should_page: list[str] = field(default_factory=list)  # explained, but should_page false
    missed: list[str] = field(default_factory=list)  # should_page clinical events over within the run, not paged
    should_page_events: int = 0  # should_page clinical events over within the run
    paged_events: int = 0  # should_page events (any kind, over or not) with a first page
    # should_page technical events not paged: their thresholds (sensor off 30 s, no data 60 s) run on wall
    # time while the scenario is compressed SPEED x, so a 2-minute scenario fault may be too short to page
    technical_not_paged: list[str] = field(default_factory=list)
    by_rule: dict[str, int] = field(default_factory=dict)


def score(state: Path, speed: float, until: float | None = None, run_s: float | None = None) -> WardScore:
    """Hold ``state``'s pages against its ground truth; events must be over (wall) by ``until`` (epoch s;
    or ``run_s`` after the scenario's start) to count as due."""
    scenario = load_scenario("ward")
    at: dict[tuple[str, str], list[float]] = defaultdict(list)  # a patient may have two brief dips
    for patient in scenario.patients:
        for event in patient.events:
            at[(patient.id, str(event.kind))].append(event.at)
    gateways = {p.gateway for p in scenario.patients}
    truth = [json.loads(line) for line in (state / "ground-truth.jsonl").read_text().splitlines() if line.strip()]
    starts: set[int] | None = None  # the scenario's start (ms): the one offset every timeline event agrees on
    for e in truth:
        if (e["patient"], e["event"]) in at:
            offsets = {e["start"] - round(a * 1000) for a in at[(e["patient"], e["event"])]}
            starts = offsets if starts is None else starts & offsets
    assert starts is not None
    assert len(starts) == 1, starts
    start: int = starts.pop()

    def wall(t: int) -> float:
        return start + (t - start) / speed

    grace = PAGE_GRACE_S * 1000
    entries = [json.loads(line) for line in (state / "pages.jsonl").read_text().splitlines() if line.strip()]
    pages = {e["page"]["page_id"]: e["page"] for e in entries if e["page"].get("state", "active") == "active"}
    result = WardScore(pages=len(pages))
    by_rule: dict[str, int] = defaultdict(int)
    paged_events: set[int] = set()
    explained: set[str] = set()  # alarm ids whose first page a ground-truth event explains
    for page in sorted(pages.values(), key=lambda p: p["t"]):
        rule = _rule(page["dedup_key"])
        by_rule[rule] += 1
        line = f"{page['patient']} {rule} step {page['step']} -> {page['destination']}: {page['text']}"
        category = RULES[rule][0] if rule in RULES else None
        kind = "clinical" if category == AlarmCategory.PHYSIOLOGICAL else "technical"
        candidates = [
            (i, e)
            for i, e in enumerate(truth)
            if e["patient"] == page["patient"]
            and e["kind"] == kind
            and (e["should_page"] or kind == "technical")
            and wall(e["start"]) <= page["t"] <= wall(e["end"]) + grace
        ]
        if page["step"] > 0 and page["alarm_id"] in explained:  # escalation of an explained alarm (wall time)
            result.matched += 1
            continue
        if page["patient"] in gateways or not candidates:
            result.unexplained.append(line)
            continue
        result.matched += 1
        explained.add(page["alarm_id"])
        paged_events.update(i for i, _ in candidates)
        if not any(e["should_page"] for _, e in candidates):
            result.technical_beyond_should_page.append(line)
    if run_s is not None:
        until = start / 1000 + run_s
    horizon = (until if until is not None else time.time()) * 1000
    for i, event in enumerate(truth):
        if not event["should_page"] or wall(event["end"]) + grace > horizon:
            continue
        described = f"{event['patient']} {event['event']} {event['devices']}"
        if event["kind"] == "clinical":
            result.should_page_events += 1
            if i not in paged_events:
                result.missed.append(described)
        elif i not in paged_events:
            result.technical_not_paged.append(described)
    result.paged_events = sum(truth[i]["should_page"] for i in paged_events)
    result.by_rule = dict(sorted(by_rule.items()))
    return result


async def test_up_ward_pages_only_what_its_ground_truth_says(tmp_path: Path) -> None:
    options = StackOptions(state=tmp_path / "state", scenario="ward", speed=SPEED, quiet=True)
    lines: list[str] = []
    async with running_stack(options, echo=lines.append) as stack:
        truth = stack.state / "ground-truth.jsonl"
        await wait_for(truth.exists, 60, what="the simulator's ground truth")
        scenario = load_scenario("ward")
        first = json.loads(truth.read_text().splitlines()[0])
        patient = next(p for p in scenario.patients if p.id == first["patient"])
        at = next(e.at for e in patient.events if str(e.kind) == first["event"])
        start_s = (first["start"] - at * 1000) / 1000
        end_s = start_s + SIMULATED_MIN * 60 / SPEED
        await wait_for(
            lambda: time.time() > end_s, end_s - time.time() + 60, what=f"{SIMULATED_MIN:g} simulated minutes"
        )
        result = score(stack.state, SPEED, until=end_s)
        gateway_logs = "".join(p.read_text() for p in (stack.state / "logs").glob("gateway-*.log"))
    print(f"\n[ward] {json.dumps(asdict(result), indent=1)}")
    assert "cannot connect" not in gateway_logs  # every device has a connection slot
    assert not result.unexplained, result.unexplained
    assert not result.missed, result.missed
    assert result.should_page_events >= 1  # p-w16's bradycardia is over: it was due
    assert result.paged_events >= 3


def _crowded_scenario(path: Path) -> Path:
    """Four beds on one gateway: 8 continuous devices for the adapter's 7 slots (the old ward's mistake)."""
    beds = "".join(
        f"""
[[patients]]
id = "p-c0{n}"
gateway = "gw-crowded"
baseline = {{ hr = 70, spo2 = 97 }}
devices = [{{ kind = "heart_rate_strap", id = "hrs-c0{n}" }}, {{ kind = "pulse_oximeter", id = "plx-c0{n}" }}]
events = []
"""
        for n in range(4)
    )
    path.write_text(f'name = "crowded"\nseed = 1\nduration = "10m"\nward = "ward-a"\n{beds}', encoding="utf-8")
    return path


async def test_up_refuses_a_scenario_binding_more_devices_to_a_gateway_than_it_has_slots(tmp_path: Path) -> None:
    scenario = _crowded_scenario(tmp_path / "crowded.toml")
    stack = Stack(StackOptions(state=tmp_path / "state", scenario=str(scenario), quiet=True), echo=lambda line: None)
    with pytest.raises(StackError) as refused:
        await stack.run()
    message = str(refused.value)
    assert "gateway gw-crowded binds 8 continuous devices but its adapter has 7 connection slots" in message
    assert "give each gateway fewer patients (more gateways)" in message
    assert stack.broker is None  # refused before any server or child process started
    assert not stack.children


async def test_an_over_capacity_gateway_pages_the_operator_once_and_no_nurse(tmp_path: Path) -> None:
    """The crowded scenario run anyway (``allow_over_capacity``): one bed's device never gets a slot."""
    scenario = _crowded_scenario(tmp_path / "crowded.toml")
    options = StackOptions(
        state=tmp_path / "state", scenario=str(scenario), speed=1.0, quiet=True, allow_over_capacity=True
    )
    async with running_stack(options, echo=lambda line: None) as stack:
        pages_file = stack.state / "pages.jsonl"

        def pages() -> list[dict[str, Any]]:
            if not pages_file.exists():
                return []
            return [json.loads(line) for line in pages_file.read_text().splitlines() if line.strip()]

        await wait_for(lambda: bool(pages()), 90, what="the over-capacity page", max_interval=1.0)
        first = time.time()
        # the waiting device is silent far longer than device_silent_s (60 s) meanwhile: no "no data" page
        await wait_for(lambda: time.time() > first + 75, 90, what="75 s more of the device waiting for a slot")
        entries = pages()
        log = (stack.state / "logs" / "gateway-gw-crowded.log").read_text()
    assert [(e["destination"], e["page"]["patient"], e["page"]["step"]) for e in entries] == [
        ("operator", "gw-crowded", 0)
    ], entries
    assert entries[0]["page"]["text"].startswith("gateway gw-crowded over capacity: 1 device not connected")
    assert log.count("cannot connect") == 1
    assert "1 bound device cannot connect: all 7 connection slots are in use" in log


if __name__ == "__main__":
    run = float(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(asdict(score(Path(sys.argv[1]), float(sys.argv[2]), run_s=run)), indent=1))
