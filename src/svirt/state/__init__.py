"""svirt.state."""
