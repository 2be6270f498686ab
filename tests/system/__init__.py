"""System tests: real namespaces and devices; run as root (see conftest)."""
