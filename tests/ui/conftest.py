"""The touchscreen tests' shared fixtures (the window-building ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PyQt5.QtWidgets import QApplication


@pytest.fixture(autouse=True)
def _no_application_stylesheet_leaks() -> Iterator[None]:
    """A test that themes the whole application (``QApplication.setStyleSheet``) leaves it unthemed for the next:
    a leaked theme resized later tests' widgets (test_layout_check_catches_clipping failed after the History tests)."""
    yield
    app = QApplication.instance()
    if isinstance(app, QApplication):
        app.setStyleSheet("")
