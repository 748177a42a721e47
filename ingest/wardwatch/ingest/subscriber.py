"""The ingest subscription: :class:`wardwatch.core.subscriber.Subscriber` (shared with the FHIR exporter)."""

from __future__ import annotations

from wardwatch.core.subscriber import MessageHandler, Subscriber

__all__ = ["MessageHandler", "Subscriber"]
