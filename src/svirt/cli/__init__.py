"""svirt.cli."""
