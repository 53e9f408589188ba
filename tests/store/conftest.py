"""A real-looking Analysis (the viewer's fixtures) for the codec test."""

from tests.viewer.conftest import analysis, phantom_grey  # noqa: F401 - fixtures
