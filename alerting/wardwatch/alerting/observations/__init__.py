"""A nurse's manual NEWS2 observations: stored and audited in the alerting store, scored by the engine."""
