"""``wardwatch bench fhir`` runs end to end on a tiny ward and reports what it exported (no timing asserts)."""

from __future__ import annotations

from wardwatch.fhir.bench import run_bench


async def test_bench_reports_counts_and_cost_per_patient_day() -> None:
    result = await run_bench(patients=1, seconds=20, interval_s=10, representations=["summary"])
    (run,) = result["runs"]
    assert run["messages"] == 1 * 20 * 4
    assert run["observations"] == run["observations_stored"] == 4 * 2
    assert run["per_patient_day"]["observations"] == 4 * 8640  # 4 series, one per 10 s
    assert run["per_patient_day"]["request_bytes"] > 0
    assert result["transactions_only"]["observations"] == 4 * 2
