"""A consumer's subscription (ingest, fhir): the core MQTT client on its high-rate path, with manual acknowledgement.

:class:`wardwatch.core.mqtt.MqttClient` does the work (measured on this project's 2-core machines,
see ``ingest/README.md``; shared by ingest and the FHIR exporter):

* Messages go straight to a synchronous handler (``on_message``: no per-message queue hop).
* A readable socket is drained of every complete packet at once, through a 256 KiB read buffer in
  front of paho's three small ``recv`` calls per packet.
* At most ``receive_maximum`` messages are held unacknowledged: the bound on memory, and the
  backpressure when the database is slow (nothing is acknowledged until stored). mosquitto 2.0.11
  honours MQTT 5 Receive Maximum only until the first acknowledgement, so the client also stops
  reading the socket while it holds more, and TCP holds the broker back. (A pause longer than about
  twice the keepalive makes paho reconnect; the broker redelivers.)
* Every connection has a new ``generation``; acknowledgements of an earlier connection are ignored,
  because the packet id may since name a different message (the broker redelivers the old one).
"""

from __future__ import annotations

from collections.abc import Callable

from wardwatch.core.config import MqttSettings
from wardwatch.core.mqtt import MqttClient

__all__ = ["MessageHandler", "Subscriber"]

#: ``handler(topic, payload, packet_id, qos, generation)``, called on the event loop for every message.
MessageHandler = Callable[[str, bytes, int, int, int], None]


class Subscriber(MqttClient):
    """A persistent-session subscription to ``topic_filters`` delivering to ``handler``; an async context manager.

    Entering starts connection attempts (with backoff, forever) and returns at once;
    :meth:`wait_subscribed` waits for the broker's grants.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        topic_filters: list[str],
        handler: MessageHandler,
        *,
        receive_maximum: int = 20_000,
        buffered: bool = True,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 10.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(
            settings,
            client_id,
            clean_start=False,
            manual_ack=True,
            receive_maximum=receive_maximum,
            max_inflight=1000,
            backoff_min_s=backoff_min_s,
            backoff_max_s=backoff_max_s,
            connect_timeout_s=connect_timeout_s,
            buffered=buffered,
        )
        self.topic_filters = list(topic_filters)
        for topic_filter in self.topic_filters:
            # only live messages: a retained copy would be handled again at every new subscription
            # (MQTT 5 Retain Handling 2; what arrives while the service is down waits in its persistent session)
            self.add_subscription(topic_filter, qos=1, retained=False)
        self._handler = handler

    def _dispatch(self, topic: str, payload: bytes, qos: int, mid: int, retain: int) -> None:
        # straight to the handler, no Message object: measured 40.9 -> 35.9 µs CPU per message (bench ingest)
        self._handler(topic, payload, mid, qos, self.generation)

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection and it is up."""
        return self.is_connected
