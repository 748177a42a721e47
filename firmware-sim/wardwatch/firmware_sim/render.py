"""``sim render``: the scenario's sample stream offline, as the gateway would publish it.

Each device track becomes wire-schema v1 messages (:class:`~wardwatch.core.schema.Vitals` per
notification and signal, :class:`~wardwatch.core.schema.DeviceStatus` on link changes), stamped
with simulated times, one fixed gateway id per patient and a sequence number per device, and
merged in time order. No BLE stack is involved; values are exactly what the GATT codecs carry.

Mapping (what a gateway does with each notification; documented in ``firmware-sim/README.md``):
0x2A37 -> ``heart_rate`` (no contact: ``v=null, absent=unavailable, q=[contact_lost]``) and
``rr_interval`` (one sample per RR, stamped back from the notification time); 0x2A5F -> ``spo2``,
``pulse_rate``, ``perfusion_index`` (the pulse amplitude index) with quality flags from the status
fields; 0x2A5E spot-checks -> ``spo2``/``pulse_rate`` with the device-clock flags (``from_storage``
when fetched through RACP after a reconnect); 0x2A19 -> ``battery`` on connect and on change.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Final

from wardwatch.core.gatt import DeviceSensorStatus, MeasurementStatus
from wardwatch.core.quality import plx_quality
from wardwatch.core.schema import (
    AbsentReason,
    DeviceRole,
    DeviceStatus,
    Quality,
    Sample,
    Signal,
    Vitals,
    WireMessage,
    encode,
)

from .model import OximeterTrack, SpotCheck, StrapTrack, Track
from .scenario import DeviceKind, Scenario
from .spot_track import SpotTrack, spot_messages

__all__ = ["RenderStats", "render", "render_messages", "role_of"]

MS = MeasurementStatus
DSS = DeviceSensorStatus


def role_of(kind: DeviceKind) -> DeviceRole:
    """Wire role of a device kind."""
    return DeviceRole(kind.value)  # the kinds are named after the profile table's roles


@dataclass(slots=True)
class RenderStats:
    """Counts of what a render produced."""

    messages: int = 0
    samples: int = 0


_CONTACT_LOST: Final = (Quality.CONTACT_LOST,)


def _NO_CONTACT(t: int) -> Sample:  # noqa: N802 - reads like a constant sample at call sites
    return Sample(t, None, _CONTACT_LOST, AbsentReason.UNAVAILABLE)


def _spot_samples(spot: SpotCheck, t_ms: int, stored: bool) -> tuple[Sample, Sample]:
    flags: list[Quality] = []
    if spot.clock_set:
        t = round(spot.device_time.replace(tzinfo=dt.UTC).timestamp() * 1000)
        flags.append(Quality.DEVICE_CLOCK)
    else:
        t = t_ms
        flags.append(Quality.DEVICE_CLOCK_UNSET)
    if stored:
        flags.append(Quality.FROM_STORAGE)
    q = tuple(x for x in Quality if x in flags)
    return Sample(t, float(spot.spo2), q), Sample(t, float(spot.pulse_rate), q)


def _device_messages(track: Track, order: int) -> Iterator[tuple[int, int, WireMessage]]:
    """(emit time, device order, message) for one device, in time order."""
    if isinstance(track, SpotTrack):
        yield from spot_messages(track, order)
        return
    patient, device = track.patient, track.device
    pid, did, gw = patient.id, device.id, patient.gateway_id
    role = role_of(device.kind)
    connected = track.connected
    battery = track.battery
    seq = 0
    last_battery = -1
    was = False
    strap = track if isinstance(track, StrapTrack) else None
    oxi = track if isinstance(track, OximeterTrack) else None
    spots = {s.index: s for s in oxi.spot_checks} if oxi is not None else {}
    pending: list[SpotCheck] = []
    if strap is not None:
        hr_list = strap.hr.tolist()
        contact_list = strap.contact.tolist()
        rr_list = strap.rr_ticks.tolist()
        offsets = strap.rr_offsets.tolist()
    if oxi is not None:
        spo2_list = oxi.spo2.tolist()
        pr_list = oxi.pulse_rate.tolist()
        pai_list = oxi.pai_tenths.tolist()
        ms_list = oxi.measurement_status.tolist()
        dss_list = oxi.device_sensor_status.tolist()
    conn_list = connected.tolist()
    batt_list = battery.tolist()
    for i in range(track.seconds):
        t = track.start_ms + (i + 1) * 1000
        now = conn_list[i]
        if oxi is not None and i in spots and not now:
            pending.append(spots[i])
        if now != was:
            if now:
                reason = None
            elif not track.powered[i]:
                reason = "battery_depleted"
            elif track.busy[i]:
                reason = "busy"
            else:
                reason = "out_of_range"
            yield (
                t,
                order,
                DeviceStatus(
                    patient=pid,
                    device=did,
                    gateway=gw,
                    t=t,
                    role=role,
                    connected=now,
                    seq=seq,
                    battery=batt_list[i] if now else None,
                    reason=reason,
                    manufacturer=device.manufacturer if now else None,
                    model=(device.model or str(device.kind)) if now else None,
                    serial=(device.serial or did) if now else None,
                    firmware=device.firmware if now else None,
                ),
            )
            seq += 1
            was = now
            if now:
                last_battery = -1
                for spot in pending:
                    a, b = _spot_samples(spot, t, stored=True)
                    yield (
                        t,
                        order,
                        Vitals(patient=pid, device=did, gateway=gw, signal=Signal.SPO2, seq=seq, samples=(a,)),
                    )
                    yield (
                        t,
                        order,
                        Vitals(
                            patient=pid,
                            device=did,
                            gateway=gw,
                            signal=Signal.PULSE_RATE,
                            seq=seq + 1,
                            samples=(b,),
                        ),
                    )
                    seq += 2
                pending.clear()
        if not now:
            continue
        if batt_list[i] != last_battery:
            last_battery = batt_list[i]
            yield (
                t,
                order,
                Vitals(
                    patient=pid,
                    device=did,
                    gateway=gw,
                    signal=Signal.BATTERY,
                    seq=seq,
                    samples=(Sample(t, float(last_battery)),),
                ),
            )
            seq += 1
        if strap is not None:
            hr_sample = Sample(t, float(hr_list[i])) if contact_list[i] else _NO_CONTACT(t)
            yield (
                t,
                order,
                Vitals(patient=pid, device=did, gateway=gw, signal=Signal.HEART_RATE, seq=seq, samples=(hr_sample,)),
            )
            seq += 1
            a, b = offsets[i], offsets[i + 1]
            if b > a:
                ticks = rr_list[a:b]
                samples = []
                back = 0
                for tick in reversed(ticks):
                    samples.append(Sample(t - back, tick / 1024))
                    back += round(tick * 1000 / 1024)
                samples.reverse()
                yield (
                    t,
                    order,
                    Vitals(
                        patient=pid,
                        device=did,
                        gateway=gw,
                        signal=Signal.RR_INTERVAL,
                        seq=seq,
                        samples=tuple(samples),
                    ),
                )
                seq += 1
        elif oxi is not None:
            q = plx_quality(ms_list[i], dss_list[i])
            for signal, value, scale in (
                (Signal.SPO2, spo2_list[i], 1.0),
                (Signal.PULSE_RATE, pr_list[i], 1.0),
                (Signal.PERFUSION_INDEX, pai_list[i], 10.0),
            ):
                if value != value:  # NaN: the device sent the SFLOAT NaN
                    sample = Sample(t, None, q, AbsentReason.NAN)
                else:
                    sample = Sample(t, int(value) / scale if scale != 1.0 else float(value), q)
                yield (
                    t,
                    order,
                    Vitals(patient=pid, device=did, gateway=gw, signal=signal, seq=seq, samples=(sample,)),
                )
                seq += 1
            live_spot = spots.get(i)
            if live_spot is not None:
                a_s, b_s = _spot_samples(live_spot, t, stored=False)
                yield (
                    t,
                    order,
                    Vitals(patient=pid, device=did, gateway=gw, signal=Signal.SPO2, seq=seq, samples=(a_s,)),
                )
                yield (
                    t,
                    order,
                    Vitals(patient=pid, device=did, gateway=gw, signal=Signal.PULSE_RATE, seq=seq + 1, samples=(b_s,)),
                )
                seq += 2


def render_messages(tracks: Sequence[Track], *, status: bool = True) -> Iterator[WireMessage]:
    """Every wire message of the tracks, merged in time order (ties: file order of devices)."""
    streams = [_device_messages(track, n) for n, track in enumerate(tracks)]
    for _, _, message in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        if status or isinstance(message, Vitals):
            yield message


def render(scenario: Scenario, tracks: Sequence[Track], out: IO[bytes], *, status: bool = True) -> RenderStats:
    """Write the stream as JSON lines; return message and sample counts."""
    del scenario  # the tracks carry everything; kept for a stable signature
    stats = RenderStats()
    buffer: list[bytes] = []
    for message in render_messages(tracks, status=status):
        buffer.append(encode(message))
        stats.messages += 1
        if isinstance(message, Vitals):
            stats.samples += len(message.samples)
        if len(buffer) >= 4096:
            out.write(b"\n".join(buffer) + b"\n")
            buffer.clear()
    if buffer:
        out.write(b"\n".join(buffer) + b"\n")
    return stats
