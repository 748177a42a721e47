"""The FHIR exporter's error base: every error it raises on purpose derives from :class:`FhirError`."""

from __future__ import annotations

from wardwatch.core.errors import WardwatchError

__all__ = ["FhirError"]


class FhirError(WardwatchError):
    """Base of the FHIR exporter's errors (the FHIR server, backfill, test server)."""
