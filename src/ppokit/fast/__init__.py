"""ppokit.fast."""
