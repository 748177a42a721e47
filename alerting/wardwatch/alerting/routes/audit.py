"""The audit log: read it (itself audited) and verify its hash chain."""

from __future__ import annotations

from typing import Final

import msgspec
from aiohttp import web

from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.auth import Permission
from wardwatch.alerting.http import SERVICE_KEY, requires
from wardwatch.alerting.http import json_response as _json
from wardwatch.alerting.http import now_ms as _now
from wardwatch.alerting.http import principal_of as _principal
from wardwatch.alerting.openapi import PathTable, components_of, operation
from wardwatch.alerting.routes.query import IdParam, LimitParam, SeqParam, TimeParam, clamped, read_query
from wardwatch.alerting.store import AuditCheck


class AuditQuery(msgspec.Struct):
    """Which audit entries to read."""

    since: TimeParam | None = None
    alarm_id: IdParam | None = None
    patient: IdParam | None = None
    after_seq: SeqParam = 0
    limit: LimitParam = 1000


class AuditEntries(msgspec.Struct):
    """Audit entries, oldest first."""

    entries: list[AuditEntry]


@requires(Permission.READ_AUDIT)
async def get_audit(request: web.Request) -> web.Response:
    """Audit entries (filtered), oldest first; reading the audit log is itself audited."""
    service = request.app[SERVICE_KEY]
    query = read_query(request, AuditQuery)
    entries = service.store.audit_entries(
        since=query.since,
        alarm_id=query.alarm_id,
        patient=query.patient,
        after_seq=query.after_seq,
        limit=clamped(query.limit, 10_000),
    )
    service.store.audit(AuditEntry(t=_now(), actor=_principal(request).actor, action="audit_read"))
    return _json(AuditEntries(entries=entries))


@requires(Permission.READ_AUDIT)
async def verify_audit(request: web.Request) -> web.Response:
    """Check the audit hash chain, its MACs (key outside the database) and the signed head checkpoint."""
    return _json(request.app[SERVICE_KEY].store.check_audit())


AUDIT_PATHS: Final[PathTable] = {
    "/api/v1/audit": {
        "get": operation(
            "Audit entries, oldest first", get_audit, "read_audit", response=AuditEntries, query=AuditQuery
        )
    },
    "/api/v1/audit/verify": {
        "get": operation("Verify the audit hash chain", verify_audit, "read_audit", response=AuditCheck)
    },
}
AUDIT_SCHEMAS: Final = components_of(AUDIT_PATHS)
