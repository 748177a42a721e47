"""wardwatch core: wire schema, MQTT topics, GATT codecs, configuration, logging and errors.

The core imports nothing from the deployable parts (gateway, ingest, alerting, firmware_sim);
each of those imports only the core and itself.
"""

from wardwatch.core.errors import ConfigError, GattDecodeError, SchemaError, WardwatchError

__all__ = ["ConfigError", "GattDecodeError", "SchemaError", "WardwatchError"]
