"""What the handover keeps in the alerting store: review notes, device history, the NEWS2 log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wardwatch.alerting.handover.devices import DeviceHistory
from wardwatch.alerting.handover.notes import ReviewNotes
from wardwatch.alerting.handover.report import SCHEMA
from wardwatch.alerting.handover.scores import News2Log

if TYPE_CHECKING:
    from wardwatch.alerting.service import AlarmService


class HandoverRecords:
    """``service.handover``: its notes, device history and NEWS2 log (each creates its tables)."""

    def __init__(self, service: AlarmService) -> None:
        self.notes = ReviewNotes(service)
        self.devices = DeviceHistory(service)
        self.scores = News2Log(service)
        service.store.add_schema(SCHEMA)
