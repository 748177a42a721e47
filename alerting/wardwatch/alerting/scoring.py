"""Score alarm output against ground truth: sensitivity, false pages and pages per patient-day.

Ground truth is JSONL, one event per line::

    {"patient": "p-1", "event": "desaturation", "kind": "clinical", "start": ms, "end": ms, "should_page": true}

``kind`` is ``clinical`` (the patient), ``artefact`` (the signal) or ``technical`` (the equipment).
A physiological *page* is the activation of a medium- or high-priority condition; low-priority ones
(trends, pulse deficit) are informational and not paged by the default escalation. Any technical
condition counts for technical events.
An optional ``"max_delay"`` (ms) overrides the detection tolerance for that event.

* A clinical event with ``should_page`` is *detected* when a physiological condition of that patient
  became active in ``[start - lead, start + onset + tolerance]`` (``onset``: the simulator's
  ``detail.onset_s`` ramp, 0 if absent); its latency is ``page.t - start``.
* A physiological page is *true* when it falls in ``[start - lead, end + tolerance]`` of such an
  event, otherwise *false* (healthy time, brief dips, artefacts, sensor-off periods).
* Technical events with ``should_page`` are detected by a technical condition in
  ``[start - lead, end + tolerance]``.

``wardwatch alerting score SAMPLES.jsonl TRUTH.jsonl [--rules R]`` (or ``--synthetic PATIENTS HOURS``)
replays the samples through the engine and through the naive fixed-threshold baseline and prints
both scores as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from wardwatch.alerting.engine import Engine, NaiveEngine
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.replay import Input, ReplayStats, read_inputs, run
from wardwatch.alerting.rules import RuleSet, load_rules
from wardwatch.core.errors import SchemaError, WardwatchError
from wardwatch.core.groundtruth import GroundTruthEvent
from wardwatch.core.schema import AlarmCategory, Priority

DEFAULT_TOLERANCE_MS = 60_000  # condition delay (15-30 s) + filter lag + margin
DEFAULT_LEAD_MS = 30_000  # noise can cross the limit shortly before the truth's onset


TruthEvent = GroundTruthEvent  # the core's ground-truth event (the simulator writes the same type)


@dataclass(slots=True)
class Score:
    """How one alarm source did on a scenario set."""

    clinical_events: int = 0
    detected: int = 0
    sensitivity: float = 0.0
    median_latency_s: float | None = None
    max_latency_s: float | None = None
    physiological_pages: int = 0
    false_physiological_pages: int = 0
    physiological_pages_per_patient_day: float = 0.0
    false_pages_per_patient_day: float = 0.0
    nonpaging_events: int = 0  # brief dips, artefacts, sensor-off periods ...
    nonpaging_events_paged: int = 0  # ... during which a physiological page went out
    technical_events: int = 0
    technical_detected: int = 0
    technical_pages: int = 0
    technical_pages_per_patient_day: float = 0.0
    patient_days: float = 0.0
    missed: list[str] = field(default_factory=list)
    by_event: dict[str, list[int]] = field(default_factory=dict)  # event -> [events, detected or paged]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def load_truth(lines: Iterable[str | bytes]) -> list[TruthEvent]:
    """Parse ground-truth JSONL (blank lines skipped)."""
    events: list[TruthEvent] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(msgspec.json.decode(line, type=TruthEvent))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SchemaError(f"ground truth line {number}: {exc}") from None
    return events


def score(
    truth: Sequence[TruthEvent],
    changes: Iterable[ConditionChange],
    patient_days: float,
    *,
    tolerance_ms: int = DEFAULT_TOLERANCE_MS,
    lead_ms: int = DEFAULT_LEAD_MS,
) -> Score:
    """Score condition changes (activations; physiological ones of medium/high priority) against ``truth``."""
    phys: dict[str, list[int]] = defaultdict(list)
    tech: dict[str, list[int]] = defaultdict(list)
    for c in changes:
        if not c.active:
            continue
        if c.category is AlarmCategory.PHYSIOLOGICAL:
            if c.priority is not Priority.LOW:  # informational (trend, pulse deficit): not paged by default
                phys[c.patient].append(c.t)
        else:
            tech[c.patient].append(c.t)
    result = Score(patient_days=patient_days)
    latencies: list[float] = []
    paging = [e for e in truth if e.kind == "clinical" and e.should_page]
    for e in truth:
        tol = e.max_delay if e.max_delay is not None else tolerance_ms
        tally = result.by_event.setdefault(e.event, [0, 0])
        tally[0] += 1
        if e.kind == "clinical" and e.should_page:
            result.clinical_events += 1
            deadline = e.start + e.onset_ms + tol
            hits = [t for t in phys.get(e.patient, ()) if e.start - lead_ms <= t <= deadline]
            if hits:
                result.detected += 1
                tally[1] += 1
                latencies.append(max(0, min(hits) - e.start) / 1000)
            else:
                result.missed.append(f"{e.patient} {e.event} at {e.start}")
        elif e.kind == "technical" and e.should_page:
            result.technical_events += 1
            if any(e.start - lead_ms <= t <= e.end + tol for t in tech.get(e.patient, ())):
                result.technical_detected += 1
                tally[1] += 1
        if not (e.kind == "clinical" and e.should_page):
            result.nonpaging_events += 1
            if any(e.start <= t <= e.end + tolerance_ms for t in phys.get(e.patient, ())):
                result.nonpaging_events_paged += 1
                if not e.should_page:
                    tally[1] += 1
    windows: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for e in paging:
        windows[e.patient].append((e.start - lead_ms, e.end + (e.max_delay or tolerance_ms)))
    for patient, times in phys.items():
        result.physiological_pages += len(times)
        spans = windows.get(patient, [])
        result.false_physiological_pages += sum(1 for t in times if not any(lo <= t <= hi for lo, hi in spans))
    result.technical_pages = sum(len(v) for v in tech.values())
    result.sensitivity = result.detected / result.clinical_events if result.clinical_events else 1.0
    if latencies:
        result.median_latency_s = statistics.median(latencies)
        result.max_latency_s = max(latencies)
    if patient_days > 0:
        result.physiological_pages_per_patient_day = result.physiological_pages / patient_days
        result.false_pages_per_patient_day = result.false_physiological_pages / patient_days
        result.technical_pages_per_patient_day = result.technical_pages / patient_days
    return result


def compare(items: Sequence[Input], truth: Sequence[TruthEvent], rules: RuleSet | None = None) -> dict[str, Score]:
    """Replay ``items`` through the engine and the naive baseline and score both."""
    rules = rules if rules is not None else RuleSet()
    stats = ReplayStats()
    engine_changes = list(run(items, Engine(rules), stats=stats))
    naive_changes = list(run(items, NaiveEngine(rules)))
    days = stats.patient_days
    return {"engine": score(truth, engine_changes, days), "naive": score(truth, naive_changes, days)}


def _summary(scores: dict[str, Score]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, s in scores.items():
        d = s.as_dict()
        d["sensitivity"] = round(s.sensitivity, 4)
        for key in (
            "physiological_pages_per_patient_day",
            "false_pages_per_patient_day",
            "technical_pages_per_patient_day",
            "patient_days",
        ):
            d[key] = round(d[key], 3)
        out[name] = d
    return out


def scoring_main(argv: list[str]) -> int:
    """``wardwatch alerting score``: print engine vs naive-baseline scores as JSON."""
    parser = argparse.ArgumentParser(
        prog="wardwatch alerting score",
        description="Score the engine and the naive fixed-threshold baseline against ground truth.",
    )
    parser.add_argument("samples", type=Path, nargs="?", help="replay JSONL (see `wardwatch alerting replay`)")
    parser.add_argument("truth", type=Path, nargs="?", help="ground-truth JSONL")
    parser.add_argument("--rules", type=Path, default=None)
    parser.add_argument("--ward", default="ward-a")
    parser.add_argument(
        "--synthetic",
        nargs=2,
        type=float,
        metavar=("PATIENTS", "HOURS"),
        help="score the built-in synthetic scenario library instead",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        rules = load_rules(args.rules)
        if args.synthetic:
            from wardwatch.alerting.synthetic import scenario_library

            scenario = scenario_library(int(args.synthetic[0]), args.synthetic[1], seed=args.seed)
            items: list[Input] = list(scenario.messages)
            truth = scenario.truth
        elif args.samples is not None and args.truth is not None:
            stats = ReplayStats()
            with args.samples.open("rb") as handle:
                items = list(read_inputs(handle, args.ward, stats, sys.stderr))
            with args.truth.open("rb") as handle:
                truth = load_truth(handle)
        else:
            parser.error("give SAMPLES and TRUTH, or --synthetic PATIENTS HOURS")
    except (WardwatchError, OSError) as exc:
        print(f"wardwatch alerting score: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(_summary(compare(items, truth, rules)), indent=2))
    return 0
