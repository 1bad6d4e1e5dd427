"""svirt.launch."""
