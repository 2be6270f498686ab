"""The ``netvirt`` command line (Typer + Rich)."""
