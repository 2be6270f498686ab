"""Southbound state: what the compiler produces and host agents consume."""
