"""svirt.host."""
