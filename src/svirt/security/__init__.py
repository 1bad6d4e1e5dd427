"""svirt.security."""
