"""Compatibility tests: an unmodified OpenStack SDK against a real ``netvirt serve``.

A package (not a bare directory) so this directory's ``conftest`` module does not
shadow ``tests/conftest.py``, which other test modules import as ``conftest``.
"""
