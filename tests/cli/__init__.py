"""CLI tests: the netvirt command against the real API app."""
