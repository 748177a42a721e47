"""The durable queue: order, batching, acknowledgement, bounds with gap reports, crash safety."""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
from pathlib import Path

import pytest
from tests.gateway.harness import committed_before_kill_9

from wardwatch.core.waiting import wait_for
from wardwatch.gateway import queue as queue_module
from wardwatch.gateway.queue import DurableQueue, QueueClosedError, QueueError, Reading

TIMEOUT = 10.0


def reading(n: int, device: str = "hr-1", patient: str = "p-1") -> Reading:
    return Reading(f"t/{device}", json.dumps({"n": n}).encode(), 1000 + n, 1000 + n, patient, device)


def numbers(messages: list[queue_module.QueuedMessage]) -> list[int]:
    return [json.loads(m.payload)["n"] for m in messages]


async def test_put_flush_read_ack_in_order(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db") as q:
        for n in range(10):
            q.put(reading(n))
        assert q.depth == 10
        await q.flush()
        got = await q.read_after(0, 100)
        assert numbers(got) == list(range(10))
        assert q.in_flight == 10
        for m in got[:4]:
            q.ack(m.id)
        assert q.depth == 6
        await q.flush()
        assert await q.read_after(got[-1].id, 100) == []
    async with DurableQueue(tmp_path / "q.db") as q:
        assert q.depth == 6
        assert numbers(await q.read_after(0, 100)) == list(range(4, 10))


async def test_acknowledged_messages_stay_deleted_after_restart(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db") as q:
        for n in range(5):
            q.put(reading(n))
        await q.flush()
        for m in await q.read_after(0, 100):
            q.ack(m.id)
    # The final flush on exit committed the deletes.
    async with DurableQueue(tmp_path / "q.db") as q:
        assert q.depth == 0
        assert await q.read_after(0, 100) == []
        q.put(reading(99))
        await q.flush()
        (m,) = await q.read_after(0, 100)
        assert m.id > 5  # ids are never reused (AUTOINCREMENT): order survives restarts


async def test_writes_are_batched_by_time(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db", commit_interval_s=0.05, commit_batch=10_000) as q:
        for n in range(300):
            q.put(reading(n))
        await wait_for(lambda: q.last_id >= 300, TIMEOUT, what="background commit")
        assert q.commits <= 3  # one transaction (one fsync) for the lot, not 300


async def test_writes_are_batched_by_size(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db", commit_interval_s=3600, commit_batch=50) as q:
        for n in range(50):
            q.put(reading(n))
        await wait_for(lambda: q.last_id >= 50, TIMEOUT, what="commit at batch size")


async def test_sequence_numbers_survive_restart_and_never_repeat(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db") as q:
        assert [q.next_seq("hr-1") for _ in range(3)] == [0, 1, 2]
        assert q.next_seq("spo2-1") == 0
        await q.flush()
        # Allocated but never committed (the process dies before the next commit): reused, which is
        # harmless because nothing carrying them was ever queued or published.
    async with DurableQueue(tmp_path / "q.db") as q:
        assert q.next_seq("hr-1") == 3
        assert q.next_seq("spo2-1") == 1


async def test_sequence_numbers_allocated_during_a_commit_are_unique(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db") as q:
        seen = []
        for _ in range(20):
            flush = asyncio.create_task(q.flush())
            seen.append(q.next_seq("d"))
            q.put(reading(len(seen)))
            await flush
        await q.flush()
        assert seen == list(range(20))
    async with DurableQueue(tmp_path / "q.db") as q:
        assert q.next_seq("d") == 20


async def test_full_queue_drops_oldest_and_reports_gaps_per_device(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db", max_messages=10) as q:
        for n in range(8):
            q.put(reading(n, device="hr-1"))
        for n in range(8, 16):
            q.put(reading(n, device="ox-1", patient="p-2"))
        await q.flush()
        assert q.depth == 10
        assert q.dropped_total == 6
        assert numbers(await q.read_after(0, 100)) == list(range(6, 16))
        (gap,) = await q.take_gaps()
        assert (gap.patient, gap.device, gap.dropped, gap.first_t, gap.last_t) == ("p-1", "hr-1", 6, 1000, 1005)
    async with DurableQueue(tmp_path / "q.db", max_messages=10) as q:
        assert q.dropped_total == 6
        (again,) = await q.take_gaps()  # not acknowledged: reported again after a restart
        assert again == gap
        q.ack_gap(gap.id)
        await q.flush()
    async with DurableQueue(tmp_path / "q.db", max_messages=10) as q:
        assert await q.take_gaps() == []


async def test_gaps_merge_until_handed_out(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db", max_messages=10) as q:
        for n in range(30):
            q.put(reading(n))
            await q.flush()  # one drop per commit
        (gap,) = await q.take_gaps()
        assert (gap.dropped, gap.first_t, gap.last_t) == (20, 1000, 1019)
        q.put(reading(30))
        await q.flush()
        (later,) = await q.take_gaps()  # the first is in flight: a new one starts
        assert later.id != gap.id
        assert (later.dropped, later.first_t, later.last_t) == (1, 1020, 1020)
        assert q.dropped_total == 21


async def test_messages_in_flight_are_not_dropped(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db", max_messages=10) as q:
        for n in range(10):
            q.put(reading(n))
        await q.flush()
        in_flight = await q.read_after(0, 3)
        for n in range(10, 15):
            q.put(reading(n))
        await q.flush()
        assert q.dropped_total == 5
        rest = await q.read_after(in_flight[-1].id, 100)
        assert numbers(in_flight) == [0, 1, 2]
        assert numbers(rest) == [8, 9, 10, 11, 12, 13, 14]


async def test_dead_letter_keeps_the_message_and_counts_it(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db") as q:
        for n in range(3):
            q.put(reading(n))
        await q.flush()
        first, *_ = await q.read_after(0, 10)
        q.dead_letter(first.id, "Not authorized: t/hr-1")
        await q.flush()
        assert q.dead_lettered_total == 1
        assert q.depth == 2
        (dead,) = await q.dead_letters()
        assert (dead.topic, dead.payload, dead.reason) == (first.topic, first.payload, "Not authorized: t/hr-1")
    async with DurableQueue(tmp_path / "q.db") as q:
        assert q.dead_lettered_total == 1
        assert numbers(await q.read_after(0, 10)) == [1, 2]


async def test_reads_fall_back_to_disk_beyond_the_memory_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "CACHE_MAX", 5)
    async with DurableQueue(tmp_path / "q.db") as q:
        for n in range(20):
            q.put(reading(n))
        await q.flush()
        got: list[queue_module.QueuedMessage] = []
        cursor = 0
        while batch := await q.read_after(cursor, 3):
            got += batch
            cursor = batch[-1].id
        assert numbers(got) == list(range(20))


async def test_wait_beyond_wakes_on_commit(tmp_path: Path) -> None:
    async with DurableQueue(tmp_path / "q.db", commit_interval_s=0.01) as q:
        waiter = asyncio.create_task(q.wait_beyond(0))
        await asyncio.sleep(0)
        assert not waiter.done()
        q.put(reading(1))
        async with asyncio.timeout(TIMEOUT):
            await waiter


async def test_closed_queue_refuses_puts(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path / "q.db")
    with pytest.raises(QueueClosedError):
        q.put(reading(1))
    with pytest.raises(QueueClosedError):
        await q.read_after(0, 1)


async def test_damaged_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(QueueError, match="cannot open queue file"):
        async with DurableQueue(path):
            pass


def _queue_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("wardwatch-queue")]


async def test_a_queue_that_cannot_open_leaves_no_worker_thread(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.write_bytes(b"this is not a database" * 100)
    queue = DurableQueue(path)
    with pytest.raises(QueueError):
        await queue.__aenter__()
    assert _queue_threads() == []
    with pytest.raises(QueueClosedError):
        await queue.read_after(0, 1)


async def test_closing_commits_what_was_put_before_the_file_and_the_worker_close(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with DurableQueue(path, commit_interval_s=3600) as q:  # no timed commit: only the closing one
        for n in range(5):
            q.put(reading(n))
        assert _queue_threads() != []
    assert _queue_threads() == []
    with pytest.raises(QueueClosedError):
        await q.read_after(0, 1)
    async with DurableQueue(path) as q:
        assert numbers(await q.read_after(0, 10)) == [0, 1, 2, 3, 4]


# --- kill -9 ----------------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import asyncio, json, sys
    from wardwatch.gateway.queue import DurableQueue, Reading

    async def main(path: str, max_messages: int) -> None:
        async with DurableQueue(path, max_messages=max_messages, commit_interval_s=0.01) as q:
            n = 0
            while True:
                for _ in range(37):
                    seq = q.next_seq("hr-1")
                    payload = json.dumps({"seq": seq}).encode()
                    q.put(Reading("t/hr-1", payload, 1000 + seq, 1000 + seq, "p-1", "hr-1"))
                    n += 1
                await q.flush()
                print(seq, flush=True)  # everything up to seq is committed

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


@pytest.mark.slow
async def test_kill_9_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    committed = await committed_before_kill_9(_WRITER, str(path), str(1_000_000), until=3000)
    async with DurableQueue(path) as q:
        seqs = []
        cursor = 0
        while batch := await q.read_after(cursor, 1000):
            seqs += [json.loads(m.payload)["seq"] for m in batch]
            cursor = batch[-1].id
        # Every acknowledged commit is there, in order, without holes; perhaps a few more.
        assert seqs[: committed + 1] == list(range(committed + 1))
        assert seqs == list(range(len(seqs)))
        assert q.next_seq("hr-1") == len(seqs)  # numbering continues after the last committed reading


@pytest.mark.slow
async def test_kill_9_with_a_full_queue_keeps_the_newest_and_the_gap(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    committed = await committed_before_kill_9(_WRITER, str(path), str(500), until=3000)
    async with DurableQueue(path, max_messages=500) as q:
        seqs = [json.loads(m.payload)["seq"] for m in await q.read_after(0, 1000)]
        assert len(seqs) == 500
        assert seqs == list(range(seqs[0], seqs[0] + 500))
        assert seqs[-1] >= committed
        assert q.dropped_total == seqs[0]  # every dropped reading counted ...
        gaps = await q.take_gaps()
        assert sum(g.dropped for g in gaps) == seqs[0]  # ... and in a durable gap report
        assert min(g.first_t for g in gaps) == 1000
        assert max(g.last_t for g in gaps) == 1000 + seqs[0] - 1
