"""The registry of patients, gateways and kits, a module of the alerting service (docs/registry.md)."""
