"""The end-to-end benchmark's page matching (review leftover of issue #17: only 50-60 % of pages matched)."""

from __future__ import annotations

from wardwatch.alerting.bench_e2e import confirming_publish_ns


def test_the_confirming_sample_is_found_by_position_not_by_adding_seconds() -> None:
    # a real stream: samples about, not exactly, 1,000 ms apart (scheduling jitter)
    times = [1_000_000, 1_001_007, 1_001_998, 1_003_013, 1_004_001, 1_005_020]
    samples = [(t, 10_000 + n) for n, t in enumerate(times)]
    # the alarm is dated from its first low sample; the filter confirms it on the third sample after it
    assert confirming_publish_ns(samples, 1_001_007) == 10_004
    assert confirming_publish_ns(samples, 1_003_013) is None  # its confirming sample was never sent
    assert confirming_publish_ns(samples, 999) is None  # not one of this patient's samples
