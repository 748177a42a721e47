"""wardwatch ingest: MQTT vitals into InfluxDB, at-least-once, each sample stored exactly once.

Modules: :mod:`~wardwatch.ingest.app` (the service), :mod:`~wardwatch.ingest.pipeline` (batching, acks,
retries, dead letters), :mod:`~wardwatch.ingest.subscriber` (the MQTT 5 client), :mod:`~wardwatch.ingest.points`
(the point schema), :mod:`~wardwatch.ingest.lineprotocol`, :mod:`~wardwatch.ingest.sinks`,
:mod:`~wardwatch.ingest.metrics`, :mod:`~wardwatch.ingest.config`, :mod:`~wardwatch.ingest.bench` and
:mod:`~wardwatch.ingest.testing`. Nothing is imported here, so ``wardwatch ingest --help`` stays quick.
"""
