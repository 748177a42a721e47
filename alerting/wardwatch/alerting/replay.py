"""Offline replay: the same engine code as live, fed from a JSONL file, printing the alarms it would raise.

``wardwatch alerting replay SAMPLES.jsonl [--rules RULES.toml | --profile NAME] [--ward W] [--sort] [--stats]
[--naive]``

Each input line is one of:

* a wire message as :func:`wardwatch.core.schema.encode` writes it (vitals and device status need the
  ward: ``--ward``, default ``ward-a``);
* ``{"ward": W, "message": {...}}`` or a wire message with an extra top-level ``"ward"`` key;
* ``{"topic": "wardwatch/v1/...", "payload": {...} | "online" | "offline", "t": ms}`` as recorded
  from MQTT (ward from the topic; availability payloads take ``t`` or the latest time seen);
* ``{"kind": "availability", "ward": W, "gateway": G, "online": bool, "t": ms}``.

Messages are processed in file order (as they would arrive live; ``--sort`` orders them by time
first); :meth:`Engine.tick` runs whenever message time has advanced by ``--tick-ms``. Output: one
:class:`ConditionChange` per line, JSON. Malformed lines are reported on stderr with their line
number and skipped; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import msgspec

from wardwatch.alerting.engine import Engine, NaiveEngine
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.rules import PROFILES, RuleSet, load_rules
from wardwatch.core.errors import SchemaError, TopicError, WardwatchError
from wardwatch.core.schema import (
    DataGap,
    DeviceStatus,
    GatewayStatus,
    Vitals,
    VitalsBatch,
    WireMessage,
    decode,
    encode,
)
from wardwatch.core.topics import parse_topic


@dataclass(frozen=True, slots=True)
class Availability:
    """A gateway's ``online``/``offline`` availability (it has no wire struct: the payload is a bare word)."""

    ward: str
    gateway: str
    online: bool
    t: int


Input = tuple[str, WireMessage] | Availability


class _Consumer(Protocol):
    def on_vitals(self, msg: Vitals, ward: str) -> list[ConditionChange]: ...


def _time(item: Input) -> int:
    if isinstance(item, Availability):
        return item.t
    msg = item[1]
    if isinstance(msg, Vitals):
        return msg.samples[0].t
    return int(getattr(msg, "t", 0))


def parse_line(line: str | bytes, default_ward: str, last_t: int = 0) -> Input | None:
    """Parse one replay line; ``None`` for blank lines and message kinds the engine does not consume."""
    raw = line if isinstance(line, bytes) else line.encode()
    if not raw.strip():
        return None
    if b'"topic"' not in raw and b'"ward"' not in raw and b'"availability"' not in raw:
        return _keep(default_ward, decode(raw))  # fast path: a bare wire message
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise SchemaError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise SchemaError("a replay line must be a JSON object")
    if "topic" in obj:
        try:
            parts = parse_topic(str(obj["topic"]))
        except TopicError as exc:
            raise SchemaError(str(exc)) from None
        payload = obj.get("payload")
        ward = parts.ward or default_ward
        if parts.leaf == "availability":
            word = payload.decode() if isinstance(payload, bytes) else str(payload)
            if word not in ("online", "offline"):
                raise SchemaError(f"availability payload must be 'online' or 'offline', not {word!r}")
            return Availability(ward, str(parts.gateway), word == "online", int(obj.get("t", last_t)))
        return _keep(ward, _decode_obj(payload))
    if obj.get("kind") == "availability":
        try:
            return Availability(str(obj["ward"]), str(obj["gateway"]), bool(obj["online"]), int(obj["t"]))
        except KeyError as exc:
            raise SchemaError(f"availability line lacks {exc.args[0]!r}") from None
    ward = str(obj.pop("ward", default_ward))
    return _keep(ward, _decode_obj(obj.get("message", obj)))


def _decode_obj(obj: Any) -> WireMessage:
    if not isinstance(obj, dict):
        raise SchemaError("payload must be a JSON object")
    return decode(msgspec.json.encode(obj))  # through the one validating decoder


def _keep(ward: str, msg: WireMessage) -> Input | None:
    if isinstance(msg, Vitals | VitalsBatch | DeviceStatus | GatewayStatus | DataGap):  # read_inputs splits batches
        return (msg.ward if isinstance(msg, GatewayStatus) else ward, msg)
    return None


@dataclass(slots=True)
class ReplayStats:
    """What a replay read and how long it took."""

    lines: int = 0
    rejected: int = 0
    messages: int = 0
    samples: int = 0
    changes: int = 0
    seconds: float = 0.0
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # patient -> first, last sample time

    @property
    def patient_days(self) -> float:
        """Monitored time summed over patients, in days."""
        return sum(last - first for first, last in self.spans.values()) / 86_400_000


def run(
    items: Iterable[Input],
    engine: Engine | _Consumer,
    *,
    tick_ms: int = 1000,
    flush: bool = True,
    stats: ReplayStats | None = None,
) -> Iterator[ConditionChange]:
    """Feed parsed input to ``engine`` (an :class:`Engine` or the naive baseline) and yield its changes."""
    stats = stats if stats is not None else ReplayStats()
    full = engine if isinstance(engine, Engine) else None
    on_vitals = engine.on_vitals
    next_tick = -1
    last_t = 0
    messages = samples = 0
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    started = time.perf_counter()
    for item in items:
        if type(item) is tuple:
            ward, msg = item
            if type(msg) is Vitals:
                t = msg.samples[0].t
                if full is not None and t >= next_tick:
                    yield from full.tick(t)
                    next_tick = t + tick_ms
                if t > last_t:
                    last_t = t
                messages += 1
                samples += len(msg.samples)
                if full is None:  # the engine keeps its own spans
                    patient = msg.patient
                    if patient not in first:
                        first[patient] = t
                    last[patient] = msg.samples[-1].t
                out = on_vitals(msg, ward)
                if out:
                    yield from out
                continue
        t = _time(item)
        if full is not None and t >= next_tick:
            yield from full.tick(t)
            next_tick = t + tick_ms
        last_t = max(t, last_t)
        messages += 1
        if full is None:
            continue
        if isinstance(item, Availability):
            yield from full.on_gateway_availability(item.ward, item.gateway, item.online, item.t)
            continue
        ward, msg = item
        if isinstance(msg, DeviceStatus):
            yield from full.on_device_status(msg, ward)
        elif isinstance(msg, DataGap):
            yield from full.on_data_gap(msg, ward)
        elif isinstance(msg, GatewayStatus):
            yield from full.on_gateway_status(msg)
    stats.messages += messages
    stats.samples += samples
    if full is not None:
        spans = full.spans()
        first = {p: span[0] for p, span in spans.items()}
        last = {p: span[1] for p, span in spans.items()}
    for patient, begin in first.items():
        old = stats.spans.get(patient)
        stats.spans[patient] = (begin, last[patient]) if old is None else (old[0], max(old[1], last[patient]))
    if full is not None:
        yield from full.tick(last_t)
        if flush:
            yield from full.flush()
    stats.seconds = time.perf_counter() - started


def read_inputs(
    lines: Iterable[str | bytes], default_ward: str, stats: ReplayStats, errors: TextIO | None
) -> Iterator[Input]:
    """Parse lines, reporting and counting malformed ones."""
    last_t = 0
    for number, line in enumerate(lines, 1):
        stats.lines += 1
        try:
            item = parse_line(line, default_ward, last_t)
        except WardwatchError as exc:
            stats.rejected += 1
            if errors is not None:
                print(f"line {number}: {exc}", file=errors)
            continue
        if item is None:
            continue
        if type(item) is tuple and isinstance(item[1], VitalsBatch):
            ward = item[0]
            for vitals in item[1].vitals():  # each series as the single message it stands for
                last_t = max(last_t, _time((ward, vitals)))
                yield ward, vitals
            continue
        last_t = max(last_t, _time(item))
        yield item


def change_to_dict(change: ConditionChange) -> dict[str, Any]:
    """A condition change as a JSON-ready dict (the replay output line)."""
    return {
        "patient": change.patient,
        "ward": change.ward,
        "rule": change.rule,
        "category": change.category.value,
        "priority": change.priority.value,
        "active": change.active,
        "t": change.t,
        "value": change.value,
        "text": change.text,
    }


def change_from_dict(obj: dict[str, Any]) -> ConditionChange:
    """Inverse of :func:`change_to_dict`."""
    from wardwatch.core.schema import AlarmCategory, Priority

    return ConditionChange(
        patient=obj["patient"],
        ward=obj["ward"],
        rule=obj["rule"],
        category=AlarmCategory(obj["category"]),
        priority=Priority(obj["priority"]),
        active=bool(obj["active"]),
        t=int(obj["t"]),
        value=obj.get("value"),
        text=obj.get("text", ""),
    )


def inputs_to_jsonl(items: Iterable[Input]) -> Iterator[str]:
    """Replay lines for parsed input (wire messages wrapped with their ward)."""
    for item in items:
        if isinstance(item, Availability):
            yield json.dumps(
                {"kind": "availability", "ward": item.ward, "gateway": item.gateway, "online": item.online, "t": item.t}
            )
        else:
            ward, msg = item
            yield '{"ward":' + json.dumps(ward) + ',"message":' + encode(msg).decode() + "}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardwatch alerting replay",
        description="Replay recorded messages through the alarm engine; print the condition changes as JSONL.",
    )
    parser.add_argument("samples", type=Path, help="JSONL file of wire messages ('-' for stdin)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--rules", type=Path, default=None, help="rules TOML (default: built-in defaults)")
    choice.add_argument("--profile", choices=sorted(PROFILES), help="a rule profile instead of a rules file")
    parser.add_argument("--ward", default="ward-a", help="ward of messages whose line does not say (default ward-a)")
    parser.add_argument("--sort", action="store_true", help="order messages by time before replaying")
    parser.add_argument("--tick-ms", type=int, default=1000, help="run time-driven rules every this much message time")
    parser.add_argument(
        "--no-flush", action="store_true", help="do not emit clears still held by the flap window at the end"
    )
    parser.add_argument(
        "--naive", action="store_true", help="run the naive fixed-threshold baseline instead of the engine"
    )
    parser.add_argument("--stats", action="store_true", help="print replay and engine counters as JSON on stderr")
    return parser


def replay_main(argv: list[str]) -> int:
    """``wardwatch alerting replay``: exit 0 when every line was understood, 1 otherwise, 2 on bad usage."""
    args = _parser().parse_args(argv)
    try:
        rules: RuleSet = RuleSet({"profile": args.profile}) if args.profile else load_rules(args.rules)
    except WardwatchError as exc:
        print(f"wardwatch alerting replay: {exc}", file=sys.stderr)
        return 2
    stats = ReplayStats()
    source = sys.stdin.buffer if str(args.samples) == "-" else None
    try:
        handle = source if source is not None else args.samples.open("rb")
    except OSError as exc:
        print(f"wardwatch alerting replay: cannot read {args.samples}: {exc}", file=sys.stderr)
        return 2
    with handle:
        items: Iterable[Input] = read_inputs(handle, args.ward, stats, sys.stderr)
        if args.sort:
            items = sorted(items, key=_time)
        engine: Engine | NaiveEngine = NaiveEngine(rules) if args.naive else Engine(rules)
        write = sys.stdout.write
        for change in run(items, engine, tick_ms=args.tick_ms, flush=not args.no_flush, stats=stats):
            stats.changes += 1
            write(json.dumps(change_to_dict(change), ensure_ascii=False) + "\n")
    if args.stats:
        report: dict[str, Any] = {
            "lines": stats.lines,
            "rejected": stats.rejected,
            "messages": stats.messages,
            "samples": stats.samples,
            "changes": stats.changes,
            "patient_days": round(stats.patient_days, 4),
            "seconds": round(stats.seconds, 3),
        }
        if isinstance(engine, Engine):
            report["engine"] = engine.stats.as_dict()
        print(json.dumps(report), file=sys.stderr)
    return 1 if stats.rejected else 0
