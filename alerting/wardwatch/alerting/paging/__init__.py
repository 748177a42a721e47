"""Paging: channels (webhook, PagerDuty-shaped webhook, SMTP, MQTT) and the outbox-driven pager."""

from wardwatch.alerting.paging.channels import (
    Channel,
    DeliveryError,
    MqttChannel,
    PagerDutyChannel,
    Publisher,
    SmtpChannel,
    WebhookChannel,
    build_channel,
    mail_for,
    pagerduty_event,
)
from wardwatch.alerting.paging.pager import ChannelMap, Pager

__all__ = [
    "Channel",
    "ChannelMap",
    "DeliveryError",
    "MqttChannel",
    "Pager",
    "PagerDutyChannel",
    "Publisher",
    "SmtpChannel",
    "WebhookChannel",
    "build_channel",
    "mail_for",
    "pagerduty_event",
]
