"""The installed package's version, from its metadata (``pyproject.toml``): the one place that reads it."""

from __future__ import annotations

from importlib.metadata import version


def package_version() -> str:
    """dclip's version as installed; cached results record it, and one written by another version is stale."""
    return version("dclip")
