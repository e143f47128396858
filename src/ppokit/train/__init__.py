"""ppokit.train."""
