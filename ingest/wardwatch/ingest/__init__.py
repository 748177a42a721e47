"""wardwatch ingest."""
