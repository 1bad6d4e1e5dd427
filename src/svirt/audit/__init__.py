"""svirt.audit."""
