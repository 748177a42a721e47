"""A ward's live board: the snapshot and its server-sent event stream (handlers in :mod:`..stream`)."""

from __future__ import annotations

from typing import Final

from wardwatch.alerting import stream
from wardwatch.alerting.auth import Permission
from wardwatch.alerting.http import requires
from wardwatch.alerting.openapi import PathTable, components_of, operation
from wardwatch.alerting.routes.query import WardPath

WARD_PATHS: Final[PathTable] = {
    "/api/v1/wards/{ward}/live": {
        "get": operation(
            "The ward's live board: latest readings per patient and device, gateways, open alarms",
            requires(Permission.READ_ALARMS)(stream.ward_snapshot),
            "read_alarms",
            path=WardPath,
            statuses=(404,),
            media={"application/json": {"schema": {"type": "object"}}},
        )
    },
    "/api/v1/wards/{ward}/stream": {
        "get": operation(
            "Server-sent events (text/event-stream) of the ward's board: snapshot, then values and alarm events",
            requires(Permission.READ_ALARMS)(stream.ward_stream),
            "read_alarms",
            path=WardPath,
            statuses=(404,),
            media={"text/event-stream": {"schema": {"type": "string"}}},
        )
    },
}
WARD_SCHEMAS: Final = components_of(WARD_PATHS)
