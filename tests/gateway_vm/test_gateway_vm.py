"""The gateway against real BlueZ: one QEMU VM boot runs every scenario, each test checks one.

``scripts/vm/vm.py`` boots Debian's kernel (Bluetooth as modules) under QEMU with the host's root
shared read-only, and runs ``guest_driver.py`` in it: simulated wearables behind ``/dev/vhci``,
``bluetoothd``, and the unmodified gateway code on bleak's default BlueZ backend. The driver writes
one JSON result; these tests assert on it. The VM takes ~1.5 minutes (software emulation).

Skipped only when QEMU or the kernel package is missing (``scripts/setup`` installs both); under CI
(``CI`` set) that is a failure instead, so CI never passes without running them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(420)]

REPO: Final = Path(__file__).resolve().parents[2]
VM: Final = REPO / "scripts" / "vm" / "vm.py"
DRIVER: Final = Path(__file__).resolve().parent / "guest_driver.py"
VM_TIMEOUT_S: Final = 240.0
GUEST_SHARED: Final = "/mnt/wardwatch"  # where the guest sees the shared folder (scripts/vm/initrd-init)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return f"({path.name}: none)"
    return f"--- {path.name} (last {lines} lines) ---\n" + "\n".join(
        path.read_text(errors="replace").splitlines()[-lines:]
    )


@pytest.fixture(scope="module")
def vm_result(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> dict[str, Any]:
    """Boot the VM once, run the guest driver, return its result (with the host's timings under ``host``)."""
    check = subprocess.run([sys.executable, str(VM), "check"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        reason = check.stdout.strip() or check.stderr.strip()
        if os.environ.get("CI"):
            pytest.fail(f"{reason} — CI must run the VM tests (scripts/setup installs what they need)")
        pytest.skip(reason)
    shared = tmp_path_factory.mktemp("vm")
    started = time.monotonic()
    run = subprocess.run(
        [
            *(sys.executable, str(VM), "run", "--shared", str(shared), "--timeout", str(VM_TIMEOUT_S), "--"),
            *(sys.executable, str(DRIVER.relative_to(REPO)), f"{GUEST_SHARED}/result.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=VM_TIMEOUT_S + 60,
    )
    total = time.monotonic() - started
    logs = "\n".join(_tail(shared / name) for name in ("guest.log", "bluetoothd.log", "console.log"))
    result_file = shared / "result.json"
    if not result_file.is_file():
        pytest.fail(f"the VM wrote no result (vm.py exited {run.returncode}: {run.stdout}{run.stderr})\n{logs}")
    result: dict[str, Any] = json.loads(result_file.read_text())
    report = json.loads(run.stdout.strip().splitlines()[-1]) if run.stdout.strip() else {}
    result["host"] = {**report, "total_s": round(total, 3)}
    result["logs"] = logs
    _say(pytestconfig, result, total)
    return result


def _say(pytestconfig: pytest.Config, result: dict[str, Any], total: float) -> None:
    """Print the VM's timings on the terminal (past pytest's capture): they are measured, not asserted."""
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    scenarios = ", ".join(f"{name} {s['seconds']:.1f} s" for name, s in result["scenarios"].items())
    with capture.global_and_fixture_disabled():
        reporter.write_line(
            f"VM ({result['host'].get('kernel')}): root switched at {result.get('root_switched_uptime_s')} s, "
            f"driver started at {result.get('driver_start_uptime_s')} s, BlueZ ready at "
            f"{result.get('bluez_ready_uptime_s')} s (guest uptime); scenarios: {scenarios}; total {total:.1f} s"
        )


def scenario(result: dict[str, Any], name: str) -> dict[str, Any]:
    """The facts of scenario ``name``, or a failure that says why there are none."""
    if "error" in result:
        pytest.fail(f"the VM stage failed: {result['error']}\n{result.get('traceback', '')}\n{result['logs']}")
    entry = result["scenarios"].get(name)
    if entry is None:
        pytest.fail(f"scenario {name} did not run (an earlier one it needs failed)\n{result['logs']}")
    if not entry["ok"]:
        pytest.fail(f"scenario {name}: {entry['error']}\n{entry.get('traceback', '')}\n{result['logs']}")
    facts: dict[str, Any] = entry["facts"]
    return facts


def test_scan_lists_both_wearables_with_names_and_services(vm_result: dict[str, Any]) -> None:
    facts = scenario(vm_result, "scan")
    assert facts["rc"] == 0
    heard = {row["address"]: row for row in facts["devices"]}
    for address, name in facts["expected"].items():
        assert address in heard, f"{name} ({address}) not heard: {facts['devices']}"
        assert heard[address]["name"] == name
    roles = {heard[address]["role"]: heard[address]["services"] for address in facts["expected"]}
    assert roles == {"heart_rate_strap": ["heart_rate_strap"], "pulse_oximeter": ["pulse_oximeter"]}


def test_concurrent_scans_raw_bleak_gets_in_progress_gateway_serialises(vm_result: dict[str, Any]) -> None:
    facts = scenario(vm_result, "in_progress")
    assert any("org.bluez.Error.InProgress" in str(outcome) for outcome in facts["raw"]), facts["raw"]
    strap_found, oximeter_found = facts["gateway"]
    assert isinstance(strap_found, list), strap_found  # a list of addresses, not an error
    assert isinstance(oximeter_found, list), oximeter_found
    assert facts["strap"] in strap_found
    assert facts["oximeter"] in oximeter_found
    assert facts["gateway_scans"] == 2


def test_two_devices_stream_decoded_readings_at_once(vm_result: dict[str, Any]) -> None:
    facts = scenario(vm_result, "concurrent")
    assert facts["both_connected"]
    assert facts["heart_rate"] == [60.0, 61.0, 62.0, 63.0, 64.0]
    assert facts["rr_interval"] == [1.0] * 5  # 1024/1024 s
    assert facts["spo2"] == [90.0, 91.0, 92.0, 93.0, 94.0]
    assert facts["pulse_rate"] == [70.0] * 5
    assert facts["info"]["hr-vm"]["serial"] == "SN-HR-1"
    assert facts["info"]["ox-vm"]["serial"] == "SN-OX-1"
    assert facts["battery"] == {"hr-vm": 90, "ox-vm": 80}
    assert facts["connects"] == {"hr-vm": 1, "ox-vm": 1}


def test_out_of_range_and_back_the_sessions_reconnect(vm_result: dict[str, Any]) -> None:
    facts = scenario(vm_result, "reconnect")
    assert facts["reasons_lost"] == {"strap": "link_lost", "oximeter": "link_lost"}
    assert facts["connects"] == {"strap": 2, "oximeter": 2}
    assert facts["heart_rate_after"] == [65.0, 66.0, 67.0, 68.0, 69.0]
    live = [v for v in facts["spo2_after"] if v != 93.0]  # 93: the backfilled spot-check
    assert live == [95.0, 96.0, 97.0, 98.0, 99.0]


def test_oximeter_backfills_the_spot_check_taken_while_away(vm_result: dict[str, Any]) -> None:
    facts = scenario(vm_result, "reconnect")
    assert facts["spot_check_kept_on_device"]
    assert facts["backfill_error"] is None
    assert facts["backfilled"] == 1
    assert facts["left_on_device"] == 0  # deleted on the device over RACP once queued
    assert 93.0 in facts["spo2_after"]
