"""wardwatch console: the nurses' web console (ward board, alarms, trends, audit)."""
