"""``wardwatch alerting cinc2015 DIR``: the PhysioNet/CinC 2015 false-alarm score of the alarm engine.

::

    wardwatch alerting cinc2015 DIR [--records FILE] [--profile NAME | --rules FILE]
                                    [--until 300] [--window 16] [--per-record]

``DIR`` holds the challenge's WFDB records (``DIR/NAME.hea`` or ``DIR/records/NAME.hea``) and its
``ALARMS`` file (``record,alarm_type,label``, label 1 = true alarm). ``--records`` is a file of record
names, one per line (default: every record in ``ALARMS`` of a supported type).

Each record is turned into the wire messages a chest strap (ECG) and a pulse oximeter (PLETH) would
send, by the device model installed for :func:`wardwatch.core.recordings.recording_model` (the
simulator's; alerting never imports it), cut at ``--until`` seconds (the bedside monitor's alarm),
and run through the engine in-process with the chosen rules. The engine's decision for a record is
"alarm true" when a rule of the alarm's type was active at any time in the last ``--window`` seconds
before ``--until``:

* Bradycardia: ``hr_low``, ``hr_low_severe`` or ``asystole`` (no beat at all is the limit of
  bradycardia: a monitor showing asystole there has certainly not suppressed the alarm);
* Tachycardia: ``hr_high``;
* Asystole: ``asystole``.

Ventricular tachycardia and flutter/fibrillation need a QRS morphology the strap does not report;
they are counted as unsupported. Two baselines are scored alike: ``never_suppress`` (every alarm
called true) and ``naive`` (the fixed-threshold monitor of :class:`NaiveEngine` with the same
limits). Score = (TP+TN)/(TP+TN+FP+5·FN), in %, as the challenge scored it; TPR and TNR in %.

A record that cannot be read, or holds less than ``--until`` seconds or neither ECG nor PLETH, is
reported under ``skipped`` (and on stderr) and left out; the run goes on. One JSON document is printed
on stdout; ``--per-record`` adds ``per_record``, one line per record, with the decision, the rules that
made it, the engine's other conditions in the window (e.g. ``strap_no_qrs``, ``pulse_deficit``) and a
summary of the heart rate the engine saw there.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from wardwatch.alerting.engine import Engine, NaiveEngine
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.replay import Input, run
from wardwatch.alerting.rules import PROFILES, RuleSet, load_rules
from wardwatch.core.errors import WardwatchError
from wardwatch.core.recordings import RecordingModel, recording_model
from wardwatch.core.schema import DeviceStatus, Signal, Vitals, WireMessage

WARD: Final = "cinc2015"
START_MS: Final = 1_700_000_000_000
# alarm type -> engine rules whose activity in the window means "alarm true"
TYPE_RULES: Final[dict[str, frozenset[str]]] = {
    "Bradycardia": frozenset({"hr_low", "hr_low_severe", "asystole"}),
    "Tachycardia": frozenset({"hr_high"}),
    "Asystole": frozenset({"asystole"}),
}
# the naive monitor has no asystole or severe rule: its limits are hr_low / hr_high
NAIVE_RULES: Final[dict[str, frozenset[str]]] = {
    "Bradycardia": frozenset({"hr_low"}),
    "Tachycardia": frozenset({"hr_high"}),
    "Asystole": frozenset({"hr_low"}),
}
UNSUPPORTED: Final = ("Ventricular_Tachycardia", "Ventricular_Flutter_Fib")
FN_WEIGHT: Final = 5


@dataclass(frozen=True, slots=True)
class Alarm:
    """One line of the challenge's ALARMS file."""

    record: str
    kind: str
    true_alarm: bool


@dataclass(slots=True)
class Tally:
    """Confusion counts of one alarm type."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def add(self, truth: bool, decision: bool) -> str:
        """Count one record; return its outcome (``TP``, ``FP``, ``TN`` or ``FN``)."""
        if truth and decision:
            self.tp += 1
            return "TP"
        if truth:
            self.fn += 1
            return "FN"
        if decision:
            self.fp += 1
            return "FP"
        self.tn += 1
        return "TN"

    def as_dict(self) -> dict[str, Any]:
        """Counts, TPR and TNR (%) and the challenge score (%, ``None`` when undefined)."""
        n = self.tp + self.fp + self.tn + self.fn
        positives, negatives = self.tp + self.fn, self.tn + self.fp
        denominator = self.tp + self.tn + self.fp + FN_WEIGHT * self.fn
        return {
            "n": n,
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "tpr": _percent(self.tp, positives),
            "tnr": _percent(self.tn, negatives),
            "score": _percent(self.tp + self.tn, denominator),
        }


def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


@dataclass(slots=True)
class RecordResult:
    """What the engine (and the naive baseline) decided on one record, and what it saw."""

    alarm: Alarm
    decision: bool
    naive: bool
    rules: list[str] = field(default_factory=list)
    other_rules: list[str] = field(default_factory=list)  # every other engine rule active in the window
    window: dict[str, Any] = field(default_factory=dict)


def read_alarms(folder: Path) -> list[Alarm]:
    """Parse ``folder/ALARMS``; raises :class:`WardwatchError` naming the file and line when malformed."""
    path = folder / "ALARMS"
    try:
        text = path.read_text()
    except OSError as exc:
        raise WardwatchError(f"cannot read {path}: {exc} (DIR must hold the challenge's ALARMS file)") from None
    alarms: list[Alarm] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or parts[2] not in ("0", "1"):
            raise WardwatchError(f"{path} line {number}: expected 'record,alarm_type,0|1', got {line!r}")
        alarms.append(Alarm(parts[0], parts[1], parts[2] == "1"))
    return alarms


def record_path(folder: Path, name: str) -> Path:
    """The header of record ``name``: ``DIR/NAME.hea`` or ``DIR/records/NAME.hea``."""
    for candidate in (folder / f"{name}.hea", folder / "records" / f"{name}.hea"):
        if candidate.is_file():
            return candidate
    return folder / "records" / f"{name}.hea"


def _intervals(changes: Iterable[tuple[str, ConditionChange]]) -> dict[str, list[tuple[int, float]]]:
    """Per key, the ``[raised, cleared)`` times of its activations (half-open: at the clear's time the
    condition is over); one still open at the end ends at +inf."""
    opened: dict[str, int] = {}
    spans: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for key, change in changes:
        if change.active:
            opened.setdefault(key, change.t)
        elif key in opened:
            spans[key].append((opened.pop(key), float(change.t)))
    for key, t in opened.items():
        spans[key].append((t, math.inf))
    return spans


def _active_in(spans: dict[str, list[tuple[int, float]]], rules: frozenset[str], lo: int, hi: int) -> list[str]:
    """The keys (rule names, or ``rule/signal``) of ``rules`` active at any time in ``[lo, hi]``.

    An activation ``[a, b)`` counts when it overlaps the window: raised at or before ``hi`` and
    cleared after ``lo`` (a condition cleared at ``lo`` exactly was over when the window opened).
    """
    return sorted(
        key
        for key, intervals in spans.items()
        if key.split("/", 1)[0] in rules and any(a <= hi and b > lo for a, b in intervals)
    )


def _summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def _window_summary(messages: Sequence[WireMessage], lo: int, hi: int) -> dict[str, Any]:
    """The heart rate the engine was given in ``[lo, hi]``: strap HR, oximeter pulse rate, beats."""
    hr: list[float] = []
    pr: list[float] = []
    rates: list[float] = []
    no_contact = no_beat = 0
    for msg in messages:
        if not isinstance(msg, Vitals):
            continue
        for s in msg.samples:
            if not lo <= s.t <= hi:
                continue
            if msg.signal is Signal.HEART_RATE:
                if s.v is None or s.q:
                    no_contact += 1
                elif s.v == 0:
                    no_beat += 1
                else:
                    hr.append(s.v)
            elif msg.signal is Signal.PULSE_RATE and s.v is not None and not s.q:
                pr.append(s.v)
            elif msg.signal is Signal.RR_INTERVAL and s.v:
                rates.append(60.0 / s.v)
    return {
        "strap_hr": {**_summary(hr), "no_beat_s": no_beat, "no_contact_s": no_contact},
        "beat_rate": _summary(rates),
        "oximeter_pr": _summary(pr),
    }


def evaluate_record(
    model: RecordingModel, folder: Path, alarm: Alarm, rules: RuleSet, until_s: float, window_s: float
) -> RecordResult:
    """Render one record, run the engine and the naive baseline, decide; raises WardwatchError if unusable."""
    patient = "p-" + alarm.record.lower()
    messages = model.render_record(
        record_path(folder, alarm.record), until_s=until_s, patient=patient, start_ms=START_MS
    )
    vitals = [m for m in messages if isinstance(m, Vitals)]
    if not any(m.signal in (Signal.HEART_RATE, Signal.PULSE_RATE) for m in vitals):
        raise WardwatchError(f"record {alarm.record} has neither an ECG lead nor PLETH")
    last = max(s.t for m in vitals for s in m.samples)
    hi = START_MS + round(until_s * 1000)
    if last < hi - 1000:
        raise WardwatchError(
            f"record {alarm.record} is partial: {(last - START_MS) / 1000:.0f} s of signal, --until is {until_s:g} s"
        )
    lo = hi - round(window_s * 1000)
    items: list[Input] = [(WARD, m) for m in messages if isinstance(m, Vitals | DeviceStatus)]
    engine_spans = _intervals((c.rule, c) for c in run(items, Engine(rules)))
    naive = NaiveEngine(rules)
    naive_changes = ((f"{c.rule}/{m.signal}", c) for m in vitals for c in naive.on_vitals(m, WARD))
    naive_spans = _intervals(naive_changes)
    active = _active_in(engine_spans, TYPE_RULES[alarm.kind], lo, hi)
    naive_active = _active_in(naive_spans, NAIVE_RULES[alarm.kind], lo, hi)
    others = _active_in(engine_spans, frozenset(engine_spans) - TYPE_RULES[alarm.kind], lo, hi)
    return RecordResult(alarm, bool(active), bool(naive_active), active, others, _window_summary(vitals, lo, hi))


def evaluate(
    folder: Path,
    alarms: Sequence[Alarm],
    rules: RuleSet,
    *,
    profile: str,
    until_s: float = 300.0,
    window_s: float = 16.0,
    per_record: bool = False,
    model: RecordingModel | None = None,
    errors: Any = None,
) -> dict[str, Any]:
    """Score the engine and both baselines on ``alarms``; the JSON document as a dict."""
    model = model if model is not None else recording_model()
    started = time.perf_counter()
    engine_tally = {kind: Tally() for kind in TYPE_RULES}
    never = {kind: Tally() for kind in TYPE_RULES}
    naive = {kind: Tally() for kind in TYPE_RULES}
    unsupported: dict[str, int] = defaultdict(int)
    skipped: list[dict[str, str]] = []
    lines: list[dict[str, Any]] = []
    evaluated = 0
    for alarm in alarms:
        if alarm.kind not in TYPE_RULES:
            unsupported[alarm.kind] += 1
            continue
        try:
            result = evaluate_record(model, folder, alarm, rules, until_s, window_s)
        except WardwatchError as exc:
            skipped.append({"record": alarm.record, "reason": str(exc)})
            if errors is not None:
                print(f"wardwatch alerting cinc2015: skipped {alarm.record}: {exc}", file=errors)
            continue
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            skipped.append({"record": alarm.record, "reason": reason})
            if errors is not None:
                print(f"wardwatch alerting cinc2015: skipped {alarm.record}: {reason}", file=errors)
            continue
        evaluated += 1
        outcome = engine_tally[alarm.kind].add(alarm.true_alarm, result.decision)
        never[alarm.kind].add(alarm.true_alarm, True)
        naive_outcome = naive[alarm.kind].add(alarm.true_alarm, result.naive)
        if per_record:
            lines.append(
                {
                    "record": alarm.record,
                    "type": alarm.kind,
                    "true_alarm": alarm.true_alarm,
                    "decision": result.decision,
                    "outcome": outcome,
                    "naive": naive_outcome,
                    "rules_in_window": result.rules,
                    "other_rules_in_window": result.other_rules,
                    **result.window,
                }
            )
    seconds = time.perf_counter() - started
    document: dict[str, Any] = {
        "profile": profile,
        "until_s": until_s,
        "window_s": window_s,
        "types": {kind: tally.as_dict() for kind, tally in engine_tally.items()},
        "baselines": {
            "never_suppress": {kind: tally.as_dict() for kind, tally in never.items()},
            "naive": {kind: tally.as_dict() for kind, tally in naive.items()},
        },
        "unsupported": dict(unsupported),
        "skipped": skipped,
        "records": evaluated,
        "seconds": round(seconds, 2),
        "records_per_s": round(evaluated / seconds, 2) if seconds > 0 else None,
    }
    if per_record:
        document["per_record"] = lines
    return document


def dumps(document: dict[str, Any]) -> str:
    """The document as indented JSON with each ``per_record`` entry on one line."""
    lines = document.get("per_record")
    if lines is None:
        return json.dumps(document, indent=2)
    head = json.dumps({k: v for k, v in document.items() if k != "per_record"}, indent=2)
    body = ",\n    ".join(json.dumps(line) for line in lines)
    return head[:-2] + (',\n  "per_record": [\n    ' + body + "\n  ]\n}" if lines else ',\n  "per_record": []\n}')


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardwatch alerting cinc2015",
        description="Score the alarm engine on PhysioNet/CinC 2015 records (device model + engine, in-process).",
    )
    parser.add_argument("dir", type=Path, help="folder with the WFDB records and the ALARMS file")
    parser.add_argument("--records", type=Path, help="file of record names, one per line (default: all in ALARMS)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="rule profile (default virtual-ward, the built-in defaults)",
    )
    choice.add_argument("--rules", type=Path, help="rules TOML (its [defaults] apply to every record)")
    parser.add_argument("--until", type=float, default=300.0, help="seconds of each record used (alarm time)")
    parser.add_argument("--window", type=float, default=16.0, help="seconds before --until a rule must be active in")
    parser.add_argument("--per-record", action="store_true", help="add one line per record to the JSON")
    return parser


def cinc2015_main(argv: list[str]) -> int:
    """Exit 0 with the JSON on stdout; 2 on bad usage or an unreadable DIR, ALARMS, --records or --rules."""
    args = _parser().parse_args(argv)
    if args.window <= 0 or args.until <= args.window:
        print("wardwatch alerting cinc2015: need 0 < --window < --until", file=sys.stderr)
        return 2
    try:
        if args.rules is not None:
            rules = load_rules(args.rules)
            profile = f"{rules.resolve(WARD, 'p-any').profile} ({args.rules})"
        else:
            profile = args.profile or "virtual-ward"
            rules = RuleSet({"profile": profile})
        alarms = read_alarms(args.dir)
        if args.records is not None:
            try:
                wanted = [n.strip() for n in args.records.read_text().splitlines() if n.strip()]
            except OSError as exc:
                raise WardwatchError(f"cannot read --records {args.records}: {exc}") from None
            by_name = {a.record: a for a in alarms}
            missing = [n for n in wanted if n not in by_name]
            if missing:
                raise WardwatchError(f"not in {args.dir / 'ALARMS'}: {', '.join(missing)}")
            alarms = [by_name[n] for n in wanted]
        document = evaluate(
            args.dir,
            alarms,
            rules,
            profile=profile,
            until_s=args.until,
            window_s=args.window,
            per_record=args.per_record,
            errors=sys.stderr,
        )
    except WardwatchError as exc:
        print(f"wardwatch alerting cinc2015: {exc}", file=sys.stderr)
        return 2
    print(dumps(document))
    return 0
