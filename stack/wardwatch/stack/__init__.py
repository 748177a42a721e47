"""wardwatch stack: ``wardwatch up`` runs the whole system locally (imports only the core; parts run as processes)."""
