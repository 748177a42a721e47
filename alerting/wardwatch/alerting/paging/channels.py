"""Paging channels: generic JSON webhook, PagerDuty Events v2 webhook, SMTP e-mail and MQTT.

Each channel makes one delivery attempt per :meth:`Channel.send` and raises
:class:`DeliveryError` if it failed; retries, backoff and fail-over live in the pager. Every
request carries the page's idempotency key (``Idempotency-Key`` header, PagerDuty ``dedup_key``
component, ``X-Wardwatch-Page-Id`` mail header) so receivers can drop duplicates. Page text has no
PHI beyond the pseudonymous patient id.
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any, Final

import aiohttp
import msgspec

from wardwatch.alerting.errors import AlertingError
from wardwatch.alerting.protocols import Channel, Publisher
from wardwatch.alerting.settings import (
    ChannelConfig,
    MqttChannelConfig,
    PagerDutyChannelConfig,
    SmtpChannelConfig,
    WebhookChannelConfig,
)
from wardwatch.core.schema import AlarmState, Page, Priority, encode
from wardwatch.core.topics import page_topic

__all__ = [
    "Channel",
    "DeliveryError",
    "HttpChannel",
    "MqttChannel",
    "PagerDutyChannel",
    "Publisher",
    "SmtpChannel",
    "WebhookChannel",
    "build_channel",
    "mail_for",
    "pagerduty_event",
]

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
PAGE_ID_HEADER: Final = "X-Wardwatch-Page-Id"

PAGERDUTY_SEVERITY: Final[dict[Priority, str]] = {
    Priority.HIGH: "critical",
    Priority.MEDIUM: "error",
    Priority.LOW: "warning",
}


class DeliveryError(AlertingError):
    """One delivery attempt on one channel failed; ``retryable`` False means do not retry this channel."""

    def __init__(self, channel: str, problem: str, *, retryable: bool = True) -> None:
        self.channel = channel
        self.problem = problem
        self.retryable = retryable
        super().__init__(f"{channel}: {problem}")


def _ssl_context(ca_file: Any) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None


def _iso(t_ms: int) -> str:
    return dt.datetime.fromtimestamp(t_ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


async def _post_json(
    session: aiohttp.ClientSession,
    name: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    ssl_context: ssl.SSLContext | None,
) -> None:
    try:
        async with session.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            ssl=ssl_context if ssl_context is not None else True,
        ) as response:
            if 200 <= response.status < 300:
                return
            retryable = response.status in (408, 409, 425, 429) or response.status >= 500
            raise DeliveryError(name, f"HTTP {response.status}", retryable=retryable)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryError(name, f"{type(exc).__name__}: {exc}") from None


class HttpChannel(abc.ABC):
    """A channel that POSTs one JSON body per page over HTTP(S); subclasses say what the body and headers are.

    2xx is delivered; 408/409/425/429 and 5xx are retryable failures; other statuses are not (the receiver refused).
    """

    def __init__(
        self, name: str, config: WebhookChannelConfig | PagerDutyChannelConfig, session: aiohttp.ClientSession
    ) -> None:
        self._name = name
        self._url = config.url
        self._timeout_s = config.timeout_s
        self._session = session
        self._ssl = _ssl_context(config.ca_file)

    @property
    def name(self) -> str:
        """Channel name for logs and audit."""
        return self._name

    @abc.abstractmethod
    def request_for(self, page: Page) -> tuple[bytes, dict[str, str]]:
        """The JSON body and the headers (besides ``Content-Type``) that deliver ``page``."""

    async def send(self, page: Page) -> None:
        """POST once."""
        body, headers = self.request_for(page)
        await _post_json(self._session, self._name, self._url, body, headers, self._timeout_s, self._ssl)


class WebhookChannel(HttpChannel):
    """POST the page as wardwatch JSON (the ``Page`` wire message) with an ``Idempotency-Key`` header."""

    def __init__(self, name: str, config: WebhookChannelConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        self.config = config

    def request_for(self, page: Page) -> tuple[bytes, dict[str, str]]:
        """The page as wardwatch JSON; the configured headers (secrets revealed only here) and the idempotency key."""
        headers = {k: v.reveal() for k, v in self.config.headers.items()}
        headers[IDEMPOTENCY_HEADER] = page.page_id
        return encode(page), headers


def pagerduty_event(page: Page, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event for ``page``.

    ``dedup_key`` is ``{alarm_id}/{destination}``: one incident per alarm and destination, so a
    repeat of the same page is absorbed by the receiver and the "resolved" notice closes it.
    """
    action = {AlarmState.RESOLVED: "resolve", AlarmState.ACKNOWLEDGED: "acknowledge"}.get(page.state, "trigger")
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": f"{page.alarm_id}/{page.destination}",
        "client": "wardwatch",
    }
    if action == "trigger":
        event["payload"] = {
            "summary": f"[{page.ward}] {page.patient}: {page.text}"[:1024],
            "source": f"wardwatch/{page.ward}",
            "severity": PAGERDUTY_SEVERITY[page.priority],
            "timestamp": _iso(page.t),
            "component": page.patient,
            "group": page.ward,
            "class": page.dedup_key.rsplit("/", 1)[-1],
            "custom_details": {
                "page_id": page.page_id,
                "alarm_id": page.alarm_id,
                "step": page.step,
                "destination": page.destination,
                "priority": str(page.priority),
            },
        }
    return event


class PagerDutyChannel(HttpChannel):
    """POST a PagerDuty-Events-v2-compatible event (``/v2/enqueue``)."""

    def __init__(self, name: str, config: PagerDutyChannelConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        self.config = config

    def request_for(self, page: Page) -> tuple[bytes, dict[str, str]]:
        """The Events v2 event (routing key revealed only here) with the idempotency key."""
        body = msgspec.json.encode(pagerduty_event(page, self.config.routing_key.reveal()))
        return body, {IDEMPOTENCY_HEADER: page.page_id}


def mail_for(page: Page, sender: str, to: list[str]) -> EmailMessage:
    """The e-mail of a page: priority, ward, pseudonymous patient and clinical text, no PHI."""
    message = EmailMessage()
    state = "" if page.state is AlarmState.ACTIVE else f" {page.state.upper()}"
    message["Subject"] = f"[wardwatch {page.priority.upper()}{state}] {page.ward} {page.patient}: {page.text}"[:200]
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Message-ID"] = f"<{page.page_id}@wardwatch>"
    message[PAGE_ID_HEADER] = page.page_id
    message["X-Priority"] = "1" if page.priority is Priority.HIGH else "3"
    message.set_content(
        f"Alarm: {page.text}\n"
        f"Priority: {page.priority}\n"
        f"State: {page.state}\n"
        f"Ward: {page.ward}\n"
        f"Patient: {page.patient}\n"
        f"Escalation step: {page.step}\n"
        f"Time: {_iso(page.t)}\n"
        f"Alarm id: {page.alarm_id}\n"
        f"Page id: {page.page_id}\n\n"
        "Acknowledge in the wardwatch app or API.\n"
    )
    return message


class SmtpChannel:
    """Send the page by e-mail over SMTP (in a worker thread; one connection per page)."""

    def __init__(self, name: str, config: SmtpChannelConfig) -> None:
        self._name = name
        self.config = config

    @property
    def name(self) -> str:
        """Channel name for logs and audit."""
        return self._name

    def _send_blocking(self, page: Page) -> None:
        config = self.config
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        client: smtplib.SMTP
        if config.security == "tls":
            client = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout_s, context=context)
        else:
            client = smtplib.SMTP(config.host, config.port, timeout=config.timeout_s)
        with client:
            if config.security == "starttls":
                client.starttls(context=context)
            if config.username is not None and config.password is not None:
                client.login(config.username, config.password.reveal())
            client.send_message(mail_for(page, config.sender, config.to))

    async def send(self, page: Page) -> None:
        """Send once."""
        try:
            await asyncio.to_thread(self._send_blocking, page)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(self._name, f"recipients refused: {exc}", retryable=False) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(self._name, f"{type(exc).__name__}: {exc}") from None


class MqttChannel:
    """Publish the page (QoS 1, wait for PUBACK) to ``wardwatch/v1/page/{ward}/{destination}``."""

    def __init__(self, name: str, config: MqttChannelConfig, publisher: Publisher) -> None:
        self._name = name
        self.config = config
        self._publisher = publisher

    @property
    def name(self) -> str:
        """Channel name for logs and audit."""
        return self._name

    async def send(self, page: Page) -> None:
        """Publish once."""
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await self._publisher.publish(page_topic(page.ward, page.destination), encode(page))
        except TimeoutError:
            raise DeliveryError(self._name, f"no PUBACK within {self.config.timeout_s} s") from None
        except Exception as exc:  # the publisher's own errors: translate at the boundary
            raise DeliveryError(self._name, f"{type(exc).__name__}: {exc}") from None


def build_channel(
    index: int,
    config: ChannelConfig,
    *,
    session: aiohttp.ClientSession,
    publisher: Publisher | None,
) -> Channel:
    """The channel for one configured entry; ``index`` is its position in the destination's list."""
    if isinstance(config, WebhookChannelConfig):
        return WebhookChannel(f"webhook:{index}", config, session)
    if isinstance(config, PagerDutyChannelConfig):
        return PagerDutyChannel(f"pagerduty:{index}", config, session)
    if isinstance(config, SmtpChannelConfig):
        return SmtpChannel(f"smtp:{index}", config)
    if publisher is None:
        raise AlertingError("an mqtt paging channel is configured but the service has no MQTT connection")
    return MqttChannel(f"mqtt:{index}", config, publisher)
