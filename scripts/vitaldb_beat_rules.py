"""The engine's beat rules on real beat-to-beat rhythms: VitalDB arrhythmia annotations (prints JSON).

A second yardstick next to the CinC 2015 records (``wardwatch alerting cinc2015``). The expert-annotated
R peaks of ``../shared/data/vitaldb-arrdb`` (482 surgical patients: sinus rhythm, AF, SVT, VT, AV block)
become a strap's notifications (``firmware_sim.recordings.strap_track_from_beats``: RR intervals exact,
HR the mean of the last 4), split at every stretch the annotators marked as bad signal. The truth is the
CinC definitions read strictly on the annotated beats: extreme bradycardia = 5 consecutive RR intervals
each > 1.5 s (< 40 /min), extreme tachycardia = 17 consecutive RR intervals each < 60/140 s, asystole = an
RR interval > 4 s. The engine runs with the ``arrhythmia`` profile. A strict episode is detected when a
rule of its family (brady: ``hr_low``, ``hr_low_severe``, ``asystole``; tachy: ``hr_high``; asystole:
``asystole``) is active between its first beat and 10 s after its last. A raise is false only when it
is not within 10 s of an episode by the loosest reading of the definition (the *mean* rate of the N
consecutive beats beyond the limit), so neither reading is favoured: a rule must catch every strict
episode, and an alarm no reading supports is false. ``--beat-fraction`` compares the engine's beat rule
(the share of the last N beats that must be beyond the limit; 0.5 = the median, the engine's setting)
with other readings, e.g. 1.0 = every beat.

Run: .venv/bin/python scripts/vitaldb_beat_rules.py [--cases N] [--beat-fraction 0.5 1.0]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wardwatch.alerting.engine import Engine
from wardwatch.alerting.engine import _heart as heart_module
from wardwatch.alerting.replay import Input, run
from wardwatch.alerting.rules import RuleSet
from wardwatch.core.schema import Vitals
from wardwatch.firmware_sim.recordings import strap_track_from_beats
from wardwatch.firmware_sim.render import render_messages
from wardwatch.firmware_sim.scenario import scenario_from_dict

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "vitaldb-arrdb" / "vitaldb_arrdb_LabelFile.tar.xz"
START_MS = 1_700_000_000_000
MIN_SEGMENT_S = 30.0
MATCH_S = 10.0
FAMILIES = {
    "brady": frozenset({"hr_low", "hr_low_severe", "asystole"}),
    "tachy": frozenset({"hr_high"}),
    "asystole": frozenset({"asystole"}),
}


@dataclass(slots=True)
class Tally:
    episodes: int = 0
    detected: int = 0
    raises: int = 0
    false_raises: int = 0
    missed: list[str] = field(default_factory=list)
    false: list[str] = field(default_factory=list)


def segments(archive: Path, limit: int | None) -> Iterator[tuple[str, np.ndarray]]:
    """(name, beat times in s from the segment's first beat) of every clean stretch of every case."""
    with tarfile.open(archive) as tar:
        members = sorted(
            (m for m in tar.getmembers() if Path(m.name).name.startswith("Annotation_file_")), key=lambda m: m.name
        )
        for member in members[:limit]:
            handle = tar.extractfile(member)
            if handle is None:
                continue
            rows = list(csv.DictReader(io.StringIO(handle.read().decode("utf-8-sig"))))
            rows.sort(key=lambda r: float(r["time_second"]))
            case = Path(member.name).stem.rsplit("_", 1)[-1]
            current: list[float] = []
            part = 0
            for row in [*rows, None]:
                bad = row is None or row["bad_signal_quality"].strip().lower() == "true"
                if bad:
                    if len(current) > 1 and current[-1] - current[0] >= MIN_SEGMENT_S:
                        times = np.asarray(current)
                        yield f"{case}.{part}", times - times[0] + 1.0
                        part += 1
                    current = []
                elif row is not None and row["beat_type"].strip():
                    current.append(float(row["time_second"]))


def episodes(beats: np.ndarray, *, loose: bool = False) -> dict[str, list[tuple[float, float]]]:
    """CinC episodes on the annotated beats, (first beat, last beat) in s: every RR beyond the limit, or
    (``loose``) the mean of N consecutive RR intervals beyond it."""
    rr = np.diff(beats)
    found: dict[str, list[tuple[float, float]]] = {"brady": [], "tachy": [], "asystole": []}
    limits = (("brady", 1.5, 5, True), ("tachy", 60.0 / 140.0, 17, False), ("asystole", 4.0, 1, True))
    for name, limit, n, longer in limits:
        if loose and rr.size >= n:
            mean = np.convolve(rr, np.ones(n) / n, mode="valid")  # mean of rr[i : i + n]
            hit = mean > limit if longer else mean < limit
            beyond = np.zeros(rr.size, np.bool_)
            for i in np.flatnonzero(hit).tolist():
                beyond[i : i + n] = True
        else:
            beyond = rr > limit if longer else rr < limit
        run_start = -1
        for i, b in enumerate([*beyond.tolist(), False]):
            if b and run_start < 0:
                run_start = i
            elif not b and run_start >= 0:
                if i - run_start >= n:
                    found[name].append((float(beats[run_start]), float(beats[i])))
                run_start = -1
    return found


def evaluate(limit: int | None, fraction: float) -> dict[str, object]:
    heart_module.BEAT_FRACTION = fraction  # type: ignore[misc]
    spec = scenario_from_dict(
        {
            "name": "vitaldb",
            "duration": 1,
            "patients": [{"id": "p", "devices": [{"kind": "heart_rate_strap", "id": "hrs-p"}]}],
        }
    ).patients[0]
    tallies = {name: Tally() for name in FAMILIES}
    hours = 0.0
    count = 0
    for name, beats in segments(ARCHIVE, limit):
        count += 1
        seconds = int(beats[-1]) + 2
        hours += seconds / 3600
        track = strap_track_from_beats(spec, spec.devices[0], START_MS, beats, seconds)
        items: list[Input] = [("w", m) for m in render_messages([track]) if isinstance(m, Vitals)]
        changes = list(run(items, Engine(RuleSet({"profile": "arrhythmia"}))))
        truth = episodes(beats)
        supported = episodes(beats, loose=True)
        for family, rules in FAMILIES.items():
            tally = tallies[family]
            spans: list[tuple[float, float]] = []
            opened: dict[str, float] = {}
            for c in changes:
                if c.rule not in rules:
                    continue
                t = (c.t - START_MS) / 1000
                if c.active:
                    opened[c.rule] = t
                    tally.raises += 1
                    near = any(a - MATCH_S <= t <= b + MATCH_S for a, b in supported[family])
                    if not near:
                        tally.false_raises += 1
                        tally.false.append(f"{name}@{t:.0f}s")
                elif c.rule in opened:
                    spans.append((opened.pop(c.rule), t))
            spans += [(a, float("inf")) for a in opened.values()]
            for a, b in truth[family]:
                tally.episodes += 1
                if any(s <= b + MATCH_S and e >= a for s, e in spans):
                    tally.detected += 1
                else:
                    tally.missed.append(f"{name}@{a:.0f}-{b:.0f}s")
    return {
        "beat_fraction": fraction,
        "segments": count,
        "hours": round(hours, 1),
        **{
            family: {
                "episodes": t.episodes,
                "detected": t.detected,
                "sensitivity": round(t.detected / t.episodes, 3) if t.episodes else None,
                "raises": t.raises,
                "false_raises": t.false_raises,
                "false_per_hour": round(t.false_raises / hours, 3) if hours else None,
                "missed": t.missed[:20],
                "false": t.false[:20],
            }
            for family, t in tallies.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, help="only the first N cases")
    parser.add_argument("--beat-fraction", type=float, nargs="+", default=[0.5])
    args = parser.parse_args()
    if not ARCHIVE.is_file():
        print(f"no VitalDB annotations at {ARCHIVE}", file=sys.stderr)
        return 1
    print(json.dumps([evaluate(args.cases, f) for f in args.beat_fraction], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
