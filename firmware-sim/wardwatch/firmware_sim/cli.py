"""``wardwatch sim``: list, render, run (live BLE), replay recordings, accuracy, bench.

``wardwatch sim --scenario FILE --transport T`` (no subcommand) means ``run``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from wardwatch.core.errors import WardwatchError

from .groundtruth import dump_jsonl, ground_truth
from .model import Track, simulate
from .radio import ControllerRadio, Radio, SimRadio
from .render import render
from .scenario import PatientSpec, Scenario, load_scenario, named_scenarios, scenario_from_dict

__all__ = ["main"]

_log = logging.getLogger("wardwatch.firmware_sim")
DATA = Path(__file__).resolve().parents[4] / "shared" / "data"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wardwatch sim", description="Simulated BLE wearables and scenarios.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("list", help="named scenarios shipped with wardwatch")
    describe = sub.add_parser("describe", help="a scenario's ward, gateways, patients and devices (JSON)")
    describe.add_argument("scenario", help="scenario file or name")
    render_p = sub.add_parser("render", help="the scenario's wire-schema stream offline (JSONL)")
    render_p.add_argument("scenario", nargs="?", help="scenario file or name")
    render_p.add_argument("--ward", action="store_true", help="render the named 'ward' scenario")
    render_p.add_argument("-o", "--out", default="-", help="output file (default stdout)")
    render_p.add_argument("--ground-truth", help="also write the ground truth JSONL here")
    render_p.add_argument("--no-status", action="store_true", help="vitals only, no device_status messages")
    render_p.add_argument("--seed", type=int, help="override the scenario seed")
    run_p = sub.add_parser("run", help="run the scenario's devices on a BLE transport in real time")
    _run_args(run_p)
    replay = sub.add_parser("replay", help="devices from a real recording (render offline or run live)")
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--wfdb", help="WFDB record (.hea) with ECG and/or PLETH")
    source.add_argument("--bidmc", help="BIDMC *_Signals.csv")
    source.add_argument("--vitaldb", type=int, metavar="CASE", help="VitalDB arrdb case id (beat annotations)")
    source.add_argument("--numerics", help="MIMIC-II numerics record (.hea)")
    replay.add_argument("--archive", default=str(DATA / "vitaldb-arrdb" / "vitaldb_arrdb_LabelFile.tar.xz"))
    replay.add_argument("--patient", default="p-replay")
    replay.add_argument("-o", "--out", default="-")
    replay.add_argument("--transport", help="run live on this transport instead of rendering")
    replay.add_argument("--speed", type=float, default=1.0)
    replay.add_argument("--until", type=float, help="use only the first SECONDS of a --wfdb/--bidmc record")
    acc = sub.add_parser("accuracy", help="device-model QRS/pulse detection accuracy on WFDB records (JSON)")
    acc.add_argument("records", nargs="*", help="WFDB .hea files (default: the shared challenge records + bidmc01)")
    acc.add_argument("--seconds", type=float, default=290.0, help="analyse this much of each record")
    acc.add_argument("--per-record", action="store_true")
    bench = sub.add_parser("bench", help="benchmarks (JSON): render samples/s, live devices sustained")
    bench.add_argument("--counts", default="10,50,100,200", help="device counts to ramp through")
    bench.add_argument("--seconds", type=float, default=10.0, help="live seconds per step")
    bench.add_argument("--render-only", action="store_true")
    bench.add_argument("--recordings", metavar="DIR", help="also time the causal device model on DIR's WFDB records")
    bench.add_argument("--until", type=float, default=300.0, help="render recordings up to this second")
    return parser


def _run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", required=True, help="scenario file or name")
    parser.add_argument(
        "--transport",
        action="append",
        default=[],
        help="tcp-server:HOST:PORT | vhci[:PATH] | usb:N (one per device) | local; repeatable",
    )
    parser.add_argument("--speed", type=float, default=1.0, help="time compression (60: a minute per second)")
    parser.add_argument("--ground-truth", help="write the ground truth JSONL (wall-clock times) here")
    parser.add_argument("--advertising-interval", type=float, default=200.0, help="ms")
    parser.add_argument("--start-delay", type=float, default=5.0, help="s between advertising and the first reading")


def _open_out(path: str) -> contextlib.AbstractContextManager[IO[bytes]]:
    if path == "-":
        return contextlib.nullcontext(sys.stdout.buffer)
    return Path(path).open("wb")


def _cmd_list() -> int:
    for name, path in sorted(named_scenarios().items()):
        scenario = load_scenario(path)
        print(
            f"{name:24} {len(scenario.patients):3} patients {scenario.duration / 60:6.1f} min  {scenario.description}"
        )
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    from .devices import device_name

    scenario = load_scenario(args.scenario)
    description = {
        "name": scenario.name,
        "description": scenario.description,
        "ward": scenario.ward,
        "duration_s": scenario.duration,
        "patients": [
            {
                "id": patient.id,
                "gateway": patient.gateway_id,
                "devices": [{"id": d.id, "kind": str(d.kind), "name": device_name(d)} for d in patient.devices],
            }
            for patient in scenario.patients
        ],
    }
    print(json.dumps(description, indent=2))
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    name = "ward" if args.ward else args.scenario
    if not name:
        print("wardwatch sim render: give a scenario file or name (or --ward)", file=sys.stderr)
        return 2
    scenario = load_scenario(name)
    if args.seed is not None:
        import msgspec

        scenario = msgspec.structs.replace(scenario, seed=args.seed)
    tracks = simulate(scenario)
    with _open_out(args.out) as out:
        stats = render(scenario, tracks, out, status=not args.no_status)
    if args.ground_truth:
        dump_jsonl(ground_truth(scenario, tracks), Path(args.ground_truth))
    print(json.dumps({"messages": stats.messages, "samples": stats.samples}), file=sys.stderr)
    return 0


@contextlib.asynccontextmanager
async def _radios(transports: list[str]) -> AsyncIterator[list[Radio]]:
    """One SimRadio exposed on tcp/vhci transports, or one ControllerRadio per real controller."""
    direct = [t for t in transports if t.split(":")[0] in {"usb", "serial", "hci-socket", "tcp-client", "pyusb"}]
    exposed = [t for t in transports if t not in direct and t != "local"]
    async with contextlib.AsyncExitStack() as stack:
        if direct:
            radios: list[Radio] = [await stack.enter_async_context(ControllerRadio.open(t)) for t in direct]
        else:
            sim = SimRadio()
            for spec in exposed:
                await stack.enter_async_context(sim.expose(spec, bluez_compatible=spec.startswith("vhci")))
            radios = [sim]
        yield radios


async def _run(args: argparse.Namespace) -> int:
    from .runner import running_scenario

    scenario = load_scenario(args.scenario)
    transports = args.transport or ["local"]
    async with _radios(transports) as radios:
        contexts: list[tuple[Scenario, Radio]]
        if len(radios) == 1 and isinstance(radios[0], SimRadio):
            contexts = [(scenario, radios[0])]
        else:
            pairs = scenario.devices()[: len(radios)]
            if len(pairs) < len(scenario.devices()):
                _log.warning("only the first %d device(s) run: one real controller per device", len(radios))
            contexts = [
                (_only(scenario, patient.id, device.id), radio)
                for (patient, device), radio in zip(pairs, radios, strict=False)
            ]
        async with contextlib.AsyncExitStack() as stack:
            lives = [
                await stack.enter_async_context(
                    running_scenario(
                        sc,
                        radio,
                        speed=args.speed,
                        start_delay=args.start_delay,
                        advertising_interval_ms=args.advertising_interval,
                    )
                )
                for sc, radio in contexts
            ]
            if args.ground_truth:
                events = [e for live in lives for e in ground_truth(live.scenario, live.tracks)]
                dump_jsonl(sorted(events, key=lambda e: e.start), Path(args.ground_truth))
            names = {did: dev.name for live in lives for did, dev in live.devices.items()}
            print(json.dumps({"running": names, "transports": transports}), file=sys.stderr, flush=True)
            for live in lives:
                await live.done.wait()
    return 0


def _only(scenario: Scenario, patient_id: str, device_id: str) -> Scenario:
    import msgspec

    patients = []
    for p in scenario.patients:
        if p.id == patient_id:
            devices = [d for d in p.devices if d.id == device_id]
            patients.append(msgspec.structs.replace(p, devices=devices))
    return msgspec.structs.replace(scenario, patients=patients)


def _replay_tracks(args: argparse.Namespace) -> tuple[Any, list[Track]]:
    from . import recordings

    raw = {
        "name": "replay",
        "duration": 1,
        "patients": [
            {
                "id": args.patient,
                "devices": [
                    {"kind": "heart_rate_strap", "id": f"hrs-{args.patient}"},
                    {"kind": "pulse_oximeter", "id": f"plx-{args.patient}"},
                ],
            }
        ],
    }
    scenario = scenario_from_dict(raw)
    patient: PatientSpec = scenario.patients[0]
    start = scenario.start_ms
    tracks: list[Track]
    if args.wfdb or args.bidmc:
        waves = recordings.read_wfdb(args.wfdb) if args.wfdb else recordings.read_bidmc_csv(args.bidmc)
        if args.until is not None:
            waves = waves.until(args.until)
        tracks = list(recordings.tracks_from_waveforms(waves, patient, start))
    elif args.vitaldb is not None:
        beats, _bad = recordings.beats_from_vitaldb(args.archive, args.vitaldb)
        seconds = int(beats[-1]) + 1
        tracks = [recordings.strap_track_from_beats(patient, patient.devices[0], start, beats, seconds)]
    else:
        tracks = list(recordings.tracks_from_numerics(args.numerics, patient, start))
    import msgspec

    seconds = max(t.seconds for t in tracks)
    return msgspec.structs.replace(scenario, duration=float(seconds)), tracks


async def _replay_live(args: argparse.Namespace, scenario: Any, tracks: list[Track]) -> int:
    from .runner import running_scenario

    async with (
        _radios([args.transport]) as radios,
        running_scenario(scenario, radios[0], speed=args.speed, wall_clock=False, tracks=tracks) as live,
    ):
        await live.done.wait()
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    scenario, tracks = _replay_tracks(args)
    if args.transport:
        return asyncio.run(_replay_live(args, scenario, tracks))
    with _open_out(args.out) as out:
        stats = render(scenario, tracks, out)
    print(json.dumps({"messages": stats.messages, "samples": stats.samples}), file=sys.stderr)
    return 0


def _cmd_accuracy(args: argparse.Namespace) -> int:
    from .recordings import accuracy_report, read_bidmc_csv, read_wfdb

    if args.records:
        records = [read_wfdb(p) for p in args.records]
    else:
        records = [read_wfdb(p) for p in sorted(glob.glob(str(DATA / "challenge2015-dev" / "records" / "*.hea")))]
        bidmc = DATA / "bidmc01" / "bidmc_01_Signals.csv"
        if bidmc.exists():
            records.append(read_bidmc_csv(bidmc))
    report = accuracy_report(records, seconds=args.seconds)
    if not args.per_record:
        report.pop("per_record")
    print(json.dumps(report, indent=1))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_live, bench_recordings, bench_render

    result: dict[str, Any] = {"render": bench_render()}
    result["render_samples_per_s"] = result["render"]["render_samples_per_s"]
    if args.recordings:
        result["recordings"] = bench_recordings(Path(args.recordings), until_s=args.until)
    if not args.render_only:
        counts = tuple(int(c) for c in args.counts.split(","))
        live = asyncio.run(bench_live(counts, seconds=args.seconds))
        result["devices_sustained_realtime"] = live["devices_sustained"]
        result["live"] = live
    print(json.dumps(result, indent=1))
    return 0


def main(argv: list[str]) -> int:
    """Entry point of ``wardwatch sim``."""
    if argv and argv[0].startswith("--scenario"):
        argv = ["run", *argv]
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.command == "list":
            return _cmd_list()
        if args.command == "describe":
            return _cmd_describe(args)
        if args.command == "render":
            return _cmd_render(args)
        if args.command == "run":
            return asyncio.run(_run(args))
        if args.command == "replay":
            return _cmd_replay(args)
        if args.command == "accuracy":
            return _cmd_accuracy(args)
        if args.command == "bench":
            return _cmd_bench(args)
    except WardwatchError as exc:
        print(f"wardwatch sim: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    _parser().print_help()
    return 2
