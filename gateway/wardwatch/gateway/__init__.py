"""wardwatch gateway."""
