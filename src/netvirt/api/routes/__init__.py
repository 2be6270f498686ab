"""Route modules, one per resource family; each exposes ``router``."""
