"""wardwatch alerting."""
