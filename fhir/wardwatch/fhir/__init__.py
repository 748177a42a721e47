"""wardwatch fhir: vitals and devices into the health record as FHIR R4 (HL7 Personal Health Device IG).

Modules: :mod:`~wardwatch.fhir.mapping` (wire messages -> FHIR resources and transaction Bundles),
:mod:`~wardwatch.fhir.exporter` (the consumer: windows, transactions, acks, retries, dead letters),
:mod:`~wardwatch.fhir.client` (the FHIR HTTP client), :mod:`~wardwatch.fhir.config`, :mod:`~wardwatch.fhir.metrics`,
:mod:`~wardwatch.fhir.app`, :mod:`~wardwatch.fhir.cli` and :mod:`~wardwatch.fhir.testing` (the local FHIR test server).
Nothing is imported here, so ``wardwatch fhir --help`` stays quick.
"""
