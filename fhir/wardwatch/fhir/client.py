"""The FHIR HTTP client: post a ``transaction`` Bundle, tell accepted, rejected and unavailable apart."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import aiohttp
import msgspec

from wardwatch.fhir.config import FhirServerSettings
from wardwatch.fhir.errors import FhirError
from wardwatch.fhir.mapping import BUNDLE_CONTENT_TYPE

__all__ = ["FhirClient", "FhirUnavailableError", "TransactionResult"]

#: Answers that say "try again later": the server, a proxy or the credentials are not there yet. 404 and 405
#: to a transaction (a POST to the base URL) mean a wrong URL or a proxy's error page: a configuration to
#: fix, never a reason to dead-letter the ward's data.
RETRY_STATUSES: Final = frozenset({401, 403, 404, 405, 408, 425, 429, 500, 502, 503, 504})

_encoder: Final = msgspec.json.Encoder()


class FhirUnavailableError(FhirError):
    """The FHIR server cannot take the transaction now (down, overloaded, timing out, refusing credentials)."""


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """The server's answer to a transaction: ``accepted`` with the response Bundle, or the rejecting outcome."""

    accepted: bool
    status: int
    body: dict[str, Any]
    request_bytes: int

    @property
    def outcome_text(self) -> str:
        """The OperationOutcome (or whatever the server sent) as compact JSON, for a dead letter."""
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False)


class FhirClient:
    """One HTTP session to the FHIR server; an async context manager."""

    def __init__(self, settings: FhirServerSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        headers = {"Content-Type": BUNDLE_CONTENT_TYPE, "Accept": BUNDLE_CONTENT_TYPE}
        if self._settings.token is not None:
            headers["Authorization"] = f"Bearer {self._settings.token.reveal()}"
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s)
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def transaction(self, bundle: dict[str, Any]) -> TransactionResult:
        """POST ``bundle`` to the base URL; raise :class:`FhirUnavailableError` when it should be retried."""
        assert self._session is not None, "use FhirClient as an async context manager"
        body = _encoder.encode(bundle)
        try:
            async with self._session.post(self._settings.url, data=body) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise FhirUnavailableError(f"cannot reach the FHIR server at {self._settings.url}: {exc!r}") from exc
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"text": raw[:2000].decode(errors="replace")}
        if not isinstance(parsed, dict):
            parsed = {"body": parsed}
        if status in RETRY_STATUSES:
            raise FhirUnavailableError(f"the FHIR server answered {status}: {json.dumps(parsed)[:500]}")
        accepted = 200 <= status < 300 and parsed.get("resourceType") == "Bundle"
        return TransactionResult(accepted=accepted, status=status, body=parsed, request_bytes=len(body))
