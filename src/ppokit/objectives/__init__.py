"""ppokit.objectives."""
