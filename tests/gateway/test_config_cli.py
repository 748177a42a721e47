"""Gateway config validation, the CLI, and sd_notify."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from wardwatch.core.errors import ConfigError
from wardwatch.core.registry import GatewayKit, KitDevice, encode_document
from wardwatch.core.schema import DeviceRole
from wardwatch.gateway import cli, sdnotify
from wardwatch.gateway.config import DeviceBinding, load_gateway_config
from wardwatch.gateway.kit import kit_path

EXAMPLE = Path(__file__).parents[2] / "deploy" / "gateway" / "gateway.example.toml"

MINIMAL = """
gateway_id = "gw-01"
ward = "ward-a"
[mqtt]
host = "localhost"
tls = false
[[devices]]
id = "hr-1"
patient = "p-1"
role = "heart_rate_strap"
address = "aa:bb:cc:dd:ee:ff"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    config = load_gateway_config(EXAMPLE, environ={"WARDWATCH_MQTT__CA_FILE": str(ca)})
    assert config.gateway_id == "gw-01"
    assert [d.role for d in config.devices] == [DeviceRole.HEART_RATE_STRAP, DeviceRole.PULSE_OXIMETER]
    assert config.devices[1].name == "PO60 0001"
    assert "change-me" not in repr(config)


def test_minimal_config_and_defaults(tmp_path: Path) -> None:
    config = load_gateway_config(write(tmp_path, MINIMAL), environ={})
    assert config.ble.max_connections == 7
    assert config.queue.max_messages == 500_000
    assert config.devices[0].matches("AA:BB:CC:DD:EE:FF", None)
    assert not config.devices[0].matches("AA:BB:CC:DD:EE:00", None)


def test_metrics_are_off_by_default_loopback_and_configurable(tmp_path: Path) -> None:
    config = load_gateway_config(write(tmp_path, MINIMAL), environ={})
    assert (config.metrics.port, config.metrics.host, config.metrics.device_labels) == (0, "127.0.0.1", False)
    config = load_gateway_config(
        write(tmp_path, MINIMAL + '[metrics]\nport = 9464\nhost = "0.0.0.0"\n'),
        environ={"WARDWATCH_METRICS__DEVICE_LABELS": "true"},
    )
    assert (config.metrics.port, config.metrics.host, config.metrics.device_labels) == (9464, "0.0.0.0", True)
    with pytest.raises(ConfigError, match="port"):
        load_gateway_config(write(tmp_path, MINIMAL + "[metrics]\nport = 70000\n"), environ={})
    with pytest.raises(ConfigError, match="patient_labels"):
        load_gateway_config(write(tmp_path, MINIMAL + "[metrics]\npatient_labels = true\n"), environ={})


def test_name_binding_matches_by_advertised_name() -> None:
    binding = DeviceBinding(id="ox-1", patient="p-1", role=DeviceRole.PULSE_OXIMETER, name="Oxi 7")
    assert binding.matches("11:22:33:44:55:66", "Oxi 7")
    assert not binding.matches("11:22:33:44:55:66", None)


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (('address = "aa:bb:cc:dd:ee:ff"', 'address = "nonsense"'), "devices[0]", "not a Bluetooth address"),
        (('address = "aa:bb:cc:dd:ee:ff"', ""), "devices[0]", "exactly one of `address` or `name`"),
        (('patient = "p-1"', 'patient = "John Smith"'), "devices[0].patient", "matching regex"),
        (('role = "heart_rate_strap"', 'role = "toaster"'), "devices[0].role", "Invalid enum value"),
        (('ward = "ward-a"', 'ward = "ward-a"\nqueue_size = 3'), None, "unknown key"),
        (("tls = false", "tls = false\nport = 0"), "mqtt", "not a TCP port"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, change: tuple[str, str], key: str | None, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_gateway_config(write(tmp_path, MINIMAL.replace(*change)), environ={})
    assert problem in str(info.value)
    if key is not None:
        assert info.value.key == key


def test_duplicate_bindings_are_refused(tmp_path: Path) -> None:
    twice = MINIMAL + MINIMAL[MINIMAL.index("[[devices]]") :].replace('id = "hr-1"', 'id = "hr-2"')
    with pytest.raises(ConfigError, match="bound to two device entries"):
        load_gateway_config(write(tmp_path, twice), environ={})


def test_missing_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    text = MINIMAL.replace("tls = false", f'tls = true\nca_file = "{tmp_path / "nope.crt"}"')
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_gateway_config(write(tmp_path, text), environ={})
    assert info.value.key == "mqtt.ca_file"


def test_unknown_time_zone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown time zone"):
        load_gateway_config(write(tmp_path, 'device_timezone = "Mars/Olympus"\n' + MINIMAL), environ={})


def test_cli_check_and_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--config", str(write(tmp_path, MINIMAL))]) == 0
    out = capsys.readouterr().out
    assert "is valid" in out
    assert "no metrics endpoint" in out
    assert cli.main(["--config", str(tmp_path / "missing.toml")]) == cli.EXIT_CONFIG
    assert "does not exist" in capsys.readouterr().err


def test_sd_notify_sends_datagrams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sdnotify.notify("READY=1") is False or "NOTIFY_SOCKET" in os.environ
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sdnotify.notify("READY=1")
        assert server.recv(100) == b"READY=1"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path.with_name("full.sock")))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path.with_name("full.sock")))
        sent = 0
        while sdnotify.notify("WATCHDOG=1"):  # nobody reads: the queue fills, and notify fails instead of blocking
            sent += 1
            assert sent < 100_000
        assert server.recv(100) == b"WATCHDOG=1"
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_interval() is None


def _bound(count: int, slots: int | None = None) -> str:
    """A config binding ``count`` continuous devices (straps and oximeters, alternating)."""
    text = MINIMAL.split("[[devices]]")[0]
    if slots is not None:
        text += f"[ble]\nmax_connections = {slots}\n"
    for n in range(count):
        role = "heart_rate_strap" if n % 2 == 0 else "pulse_oximeter"
        text += f'[[devices]]\nid = "d-{n}"\npatient = "p-{n // 2}"\nrole = "{role}"\nname = "Device {n}"\n'
    return text


def test_cli_check_refuses_more_continuous_devices_than_connection_slots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", "--config", str(write(tmp_path, _bound(7)))]) == 0
    assert "7 bound devices (7 continuous, 7 connection slots)" in capsys.readouterr().out

    assert cli.main(["check", "--config", str(write(tmp_path, _bound(16)))]) == cli.EXIT_CONFIG
    captured = capsys.readouterr()
    assert "is valid" not in captured.out
    assert "refused" in captured.err
    assert "binds 16 continuous devices but its adapter has 7 connection slots" in captured.err
    assert "9 of them would never connect" in captured.err
    assert "Bind at most 7 continuous devices to this gateway" in captured.err

    # an adapter with fewer slots (a CSR dongle: ~5) counts too
    assert cli.main(["check", "--config", str(write(tmp_path, _bound(6, slots=5)))]) == cli.EXIT_CONFIG
    assert "1 of them would never connect" in capsys.readouterr().err
    # the gateway itself still starts with such a config (it reports the shortage at run time)
    assert load_gateway_config(write(tmp_path, _bound(16)), environ={}).capacity_problem() is not None


def test_cli_check_says_the_devices_are_the_fallback_and_checks_a_kept_kit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The registry's kit (kept beside the queue) is what the gateway binds: check counts it against the slots."""
    queue = tmp_path / "queue" / "queue.db"
    config = write(tmp_path, MINIMAL.replace("[[devices]]", f'[queue]\npath = "{queue}"\n[[devices]]'))
    assert cli.main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "1 bound devices (1 continuous, 7 connection slots) in its [[devices]] (the offline fallback" in out
    assert f"no kit kept in {kit_path(queue)} yet" in out

    def keep(devices: int, revision: int) -> None:
        roles = (DeviceRole.HEART_RATE_STRAP, DeviceRole.PULSE_OXIMETER)
        bound = tuple(
            KitDevice(id=f"d-{n}", patient=f"p-{n // 2}", role=roles[n % 2], since=0, name=f"Device {n}")
            for n in range(devices)
        )
        ended = KitDevice(id="d-old", patient="p-old", role=roles[0], since=0, until=1, name="Old")
        kit = GatewayKit(ward="ward-a", gateway="gw-01", revision=revision, issued_at=1, devices=(*bound, ended))
        queue.parent.mkdir(exist_ok=True)
        kit_path(queue).write_bytes(encode_document(kit))

    keep(4, revision=3)
    assert cli.main(["check", "--config", str(config)]) == 0
    assert f"kit revision 3 kept in {kit_path(queue)}: 4 bound devices (4 continuous)" in capsys.readouterr().out

    keep(9, revision=4)  # the ended binding does not count
    assert cli.main(["check", "--config", str(config)]) == cli.EXIT_CONFIG
    captured = capsys.readouterr()
    assert "is valid" not in captured.out
    assert "(revision 4) binds 9 continuous devices but the adapter has 7 connection slots" in captured.err
    assert "2 of them would never connect" in captured.err
