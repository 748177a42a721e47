"""Real mosquitto and influxd servers as child processes, for tests, benchmarks and ``wardwatch up``.

Each server gets its own directory (config, data, log) and free loopback ports, counts as ready
when it answers an MQTT CONNECT (mosquitto) or answers ``GET /ping`` with 204 (influxd), and can
be stopped, killed, paused and started again on the same ports with the same data: the faults the
rest of the system must survive. Standard library only (plus the ``openssl`` and
``mosquitto_passwd`` commands), so that the core stays light.

    async with Mosquitto(persistence=True) as broker:
        ...  # broker.host, broker.port, broker.endpoint()
        await broker.stop()
        await broker.start()  # same port, same persistence file

The harness is a package of small modules: :mod:`.process` (child-process lifecycle), :mod:`.tls`,
:mod:`.mosquitto`, :mod:`.influxd`.
"""

from __future__ import annotations

from wardwatch.core.servers.influxd import Influxd
from wardwatch.core.servers.mosquitto import Mosquitto, MqttEndpoint, write_password_file
from wardwatch.core.servers.process import LOOPBACK, free_port
from wardwatch.core.servers.tls import TlsMaterial, make_ca_and_server_cert
from wardwatch.core.waiting import wait_for

__all__ = [
    "LOOPBACK",
    "Influxd",
    "Mosquitto",
    "MqttEndpoint",
    "TlsMaterial",
    "free_port",
    "make_ca_and_server_cert",
    "wait_for",
    "write_password_file",
]
