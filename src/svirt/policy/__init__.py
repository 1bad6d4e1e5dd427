"""svirt.policy."""
