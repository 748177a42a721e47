"""Vitals batches: one message per device per queue commit, every sample kept, durable like single messages."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.gateway.harness import committed_before_kill_9, running_publisher

from wardwatch.core import gatt
from wardwatch.core.config import MqttSettings
from wardwatch.core.schema import (
    DeviceRole,
    DeviceStatus,
    Sample,
    Signal,
    Vitals,
    VitalsBatch,
    decode,
    decode_vitals_batch,
)
from wardwatch.core.servers import Mosquitto
from wardwatch.core.topics import vitals_batch_topic
from wardwatch.core.waiting import wait_for
from wardwatch.gateway.config import DeviceBinding
from wardwatch.gateway.queue import DurableQueue, QueuedMessage
from wardwatch.gateway.readings import MAX_BATCH_SAMPLES, DeviceDecoder, Recorder

TIMEOUT = 15.0
WARD = "ward-a"
GATEWAY = "gw-01"
T0 = 1_700_000_000_000
STRAP = DeviceBinding(id="hr-1", patient="p-1", role=DeviceRole.HEART_RATE_STRAP, address="AA:BB:CC:DD:EE:01")
OXIMETER = DeviceBinding(id="ox-1", patient="p-1", role=DeviceRole.PULSE_OXIMETER, address="AA:BB:CC:DD:EE:02")
SettingsFor = Callable[..., MqttSettings]
Collect = Callable[..., Any]  # tests/gateway/conftest.py: collecting()


def strap_bytes(i: int) -> bytes:
    return gatt.encode_heart_rate_measurement(gatt.HeartRateMeasurement(60 + i % 40, True, None, (800 + i % 50,)))


def oximeter_bytes(i: int) -> bytes:
    return gatt.encode_plx_continuous_measurement(
        gatt.PlxContinuousMeasurement(
            gatt.MedFloat(90 + i % 10), gatt.MedFloat(60 + i % 30), pulse_amplitude_index=gatt.MedFloat(52, -1)
        )
    )


def feed(recorder: Recorder, notifications: int) -> None:
    """``notifications`` from a strap and an oximeter, alternately, 10 ms apart (a fixed clock)."""
    now = [T0 / 1000]
    decoders = [DeviceDecoder(b, recorder, clock=lambda: now[0]) for b in (STRAP, OXIMETER)]
    for i in range(notifications):
        now[0] = (T0 + 10 * i) / 1000
        if i % 2 == 0:
            assert decoders[0].handle(gatt.HEART_RATE_MEASUREMENT, strap_bytes(i))
        else:
            assert decoders[1].handle(gatt.PLX_CONTINUOUS_MEASUREMENT, oximeter_bytes(i))


async def all_queued(q: DurableQueue) -> list[QueuedMessage]:
    await q.flush()
    out: list[QueuedMessage] = []
    while found := await q.read_after(out[-1].id if out else 0, 1000):
        out += found
    return out


def series(messages: list[QueuedMessage]) -> list[Vitals]:
    """Every queued vitals message, batches split into their series, in queue order."""
    out: list[Vitals] = []
    for m in messages:
        decoded = decode(m.payload)
        if isinstance(decoded, VitalsBatch):
            out += decoded.vitals()
        elif isinstance(decoded, Vitals):
            out.append(decoded)
    return out


def samples_by_stream(vitals: list[Vitals]) -> dict[tuple[str, str], list[Sample]]:
    out: dict[tuple[str, str], list[Sample]] = {}
    for v in vitals:
        out.setdefault((v.device, v.signal), []).extend(v.samples)
    return out


async def test_a_batch_carries_every_sample_a_single_message_would_in_the_same_order(tmp_path: Path) -> None:
    async with (
        DurableQueue(tmp_path / "single.db") as single_queue,
        DurableQueue(tmp_path / "batch.db") as batch_queue,
    ):
        feed(Recorder(single_queue, gateway=GATEWAY, ward=WARD), 200)
        batching = Recorder(batch_queue, gateway=GATEWAY, ward=WARD, batch=True)
        feed(batching, 200)
        assert batch_queue.depth == 0  # held until the commit
        singles, batches = await all_queued(single_queue), await all_queued(batch_queue)
    assert len(singles) == 100 * 2 + 100 * 3  # HR + RR per strap notification, SpO2 + PR + PI per oximeter's
    assert len(batches) == 2  # one commit: one batch per device
    assert [m.topic for m in batches] == [
        vitals_batch_topic(WARD, GATEWAY, "p-1", "hr-1"),
        vitals_batch_topic(WARD, GATEWAY, "p-1", "ox-1"),
    ]
    assert samples_by_stream(series(batches)) == samples_by_stream(series(singles))
    assert batching.recorded == 2
    # each series has its own number of the device's sequence (consumers drop duplicates by device, signal, seq)
    strap_batch = decode_vitals_batch(batches[0].payload)
    assert [(s.signal, s.seq) for s in strap_batch.series] == [(Signal.HEART_RATE, 0), (Signal.RR_INTERVAL, 1)]


async def test_each_commit_makes_new_batches_and_numbering_continues(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db") as q:
        recorder = Recorder(q, gateway=GATEWAY, ward=WARD, batch=True)
        feed(recorder, 10)
        first = await all_queued(q)
        feed(recorder, 10)
        second = [m for m in await all_queued(q) if m.id > first[-1].id]
    assert len(first) == len(second) == 2
    seqs = [v.seq for v in series(first + second) if v.device == "ox-1"]
    assert seqs == list(range(6))


async def test_a_device_status_is_queued_after_the_samples_received_before_it(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db") as q:
        recorder = Recorder(q, gateway=GATEWAY, ward=WARD, batch=True)
        feed(recorder, 1)
        recorder.device_status(
            DeviceStatus(
                patient="p-1",
                device="hr-1",
                gateway=GATEWAY,
                t=T0 + 5,
                role=DeviceRole.HEART_RATE_STRAP,
                connected=False,
                reason="out_of_range",
            )
        )
        kinds = [type(decode(m.payload)).__name__ for m in await all_queued(q)]
    assert kinds == ["VitalsBatch", "DeviceStatus"]


async def test_a_device_holding_too_many_samples_is_queued_before_the_commit(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db", commit_interval_s=3600, commit_batch=10**6) as q:
        recorder = Recorder(q, gateway=GATEWAY, ward=WARD, batch=True)
        for n in range(MAX_BATCH_SAMPLES + 10):
            recorder.vitals(STRAP, Signal.HEART_RATE, (Sample(T0 + n, 70.0),))
        assert q.depth == 1  # the full batch went to the queue at once; the rest waits for the commit
        messages = await all_queued(q)
    sizes = [sum(len(s.samples) for s in decode_vitals_batch(m.payload).series) for m in messages]
    assert sizes == [MAX_BATCH_SAMPLES, 10]


async def test_a_failed_commit_keeps_the_batches_for_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with DurableQueue(tmp_path / "q.db") as q:
        recorder = Recorder(q, gateway=GATEWAY, ward=WARD, batch=True)
        feed(recorder, 20)
        original = q._commit

        def disk_full(batch: Any) -> Any:
            from wardwatch.gateway.queue import QueueError

            raise QueueError("disk full")

        monkeypatch.setattr(q, "_commit", disk_full)
        with pytest.raises(Exception, match="disk full"):
            await q.flush()
        monkeypatch.setattr(q, "_commit", original)
        messages = await all_queued(q)
    assert len(messages) == 2
    assert sum(len(v.samples) for v in series(messages)) == 10 * 2 + 10 * 3


async def test_a_batch_leaves_the_queue_only_at_its_puback_and_arrives_whole(
    tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    """Batches queued and handed to the publisher while the broker is down stay on disk across a restart."""
    async with Mosquitto(directory=tmp_path / "broker", persistence=True) as broker:
        settings = settings_for(broker)
        async with collect(settings, "wardwatch/v1/vitals/#", client_id="nurse-station", persistent=True) as sub:
            await broker.stop()
            async with DurableQueue(tmp_path / "q.db") as q:
                recorder = Recorder(q, gateway=GATEWAY, ward=WARD, batch=True)
                feed(recorder, 40)
                await q.flush()
                async with running_publisher(q, settings) as publisher:
                    await asyncio.sleep(0)  # the publisher is up but nothing can be acknowledged
                    assert publisher.acked == 0
                # closed without PUBACKs (as after a crash: only acknowledged messages are deleted)
            await broker.start()
            async with DurableQueue(tmp_path / "q.db") as q:
                assert q.depth == 2
                async with running_publisher(q, settings) as publisher:
                    await wait_for(lambda: publisher.acked == 2 and q.depth == 0, TIMEOUT, what="batches acknowledged")
                await wait_for(lambda: len(sub.vitals()) >= 5, TIMEOUT, what="the batches at the subscriber")
            received = samples_by_stream(sub.vitals())
    assert {k: len(v) for k, v in received.items()} == {
        ("hr-1", "heart_rate"): 20,
        ("hr-1", "rr_interval"): 20,
        ("ox-1", "spo2"): 20,
        ("ox-1", "pulse_rate"): 20,
        ("ox-1", "perfusion_index"): 20,
    }


# --- kill -9 in the middle of batching ----------------------------------------------------------

_BATCHING_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from wardwatch.core import gatt
    from wardwatch.core.schema import DeviceRole
    from wardwatch.gateway.config import DeviceBinding
    from wardwatch.gateway.queue import DurableQueue
    from wardwatch.gateway.readings import DeviceDecoder, Recorder

    STRAP = DeviceBinding(id="hr-1", patient="p-1", role=DeviceRole.HEART_RATE_STRAP, address="AA:BB:CC:DD:EE:01")

    async def main(path: str) -> None:
        async with DurableQueue(path, commit_interval_s=0.01) as q:
            recorder = Recorder(q, gateway="gw-01", ward="ward-a", batch=True)
            now = [1_700_000_000.0]
            decoder = DeviceDecoder(STRAP, recorder, clock=lambda: now[0])
            i = 0
            while True:
                for _ in range(37):
                    now[0] += 0.01
                    decoder.handle(gatt.HEART_RATE_MEASUREMENT,
                                   gatt.encode_heart_rate_measurement(gatt.HeartRateMeasurement(i % 200 + 1, True)))
                    i += 1
                await q.flush()
                print(i, flush=True)  # the first i heart rates are committed
                for _ in range(5):  # more held in the recorder (a batch in the making) when the kill comes
                    now[0] += 0.01
                    decoder.handle(gatt.HEART_RATE_MEASUREMENT,
                                   gatt.encode_heart_rate_measurement(gatt.HeartRateMeasurement(i % 200 + 1, True)))
                    i += 1
                await asyncio.sleep(0)

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.slow
async def test_kill_9_mid_batch_loses_no_committed_sample(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    committed = await committed_before_kill_9(_BATCHING_WRITER, str(path), until=3000)
    async with DurableQueue(path) as q:
        vitals = series(await all_queued(q))
        values = [s.v for v in vitals for s in v.samples]
        # every committed heart rate is there, in order, without holes or repeats; perhaps a few more
        assert values[:committed] == [float(i % 200 + 1) for i in range(committed)]
        assert values == [float(i % 200 + 1) for i in range(len(values))]
        seqs = [v.seq for v in vitals]
        assert seqs == list(range(len(seqs)))
        assert q.next_seq("hr-1") == len(seqs)  # numbering continues after the last committed batch
