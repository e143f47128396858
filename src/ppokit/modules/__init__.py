"""ppokit.modules."""
