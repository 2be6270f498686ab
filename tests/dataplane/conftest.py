"""Data plane tests: Scapy is the byte-exact oracle and is never imported by src/.

Scapy imports cleanly under ``-W error`` today; if a release starts warning on
import, add a targeted filter here rather than in pyproject.toml.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Keep Hypothesis failure reports readable under ``-W error``.

    When a property fails, Hypothesis writes a patch with the failing example
    and in doing so touches ``mypy_extensions.TypedDict``, whose deprecation
    warning would otherwise turn the report into an INTERNALERROR that hides
    the falsifying example.
    """
    config.addinivalue_line(
        "filterwarnings",
        "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning",
    )
