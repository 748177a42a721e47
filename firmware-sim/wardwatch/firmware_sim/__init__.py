"""wardwatch firmware_sim."""
