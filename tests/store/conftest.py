"""A real-looking Analysis (the viewer's fixtures) for the codec test."""

from tests.viewer.conftest import analysis, phantom_display  # noqa: F401 - fixtures
