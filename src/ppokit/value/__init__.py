"""ppokit.value."""
