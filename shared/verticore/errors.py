"""User-facing errors. Each carries a one-line message that names the fix.

The CLIs turn any :class:`VerticoreError` into ``error: <message>`` and exit code 3
(``verticore.cli_support``), so bad input never surfaces as a stack trace.
"""
from __future__ import annotations


class VerticoreError(Exception):
    """Base class for errors caused by the user's input or environment."""


class DataError(VerticoreError):
    """Input data is unreadable, empty, mis-encoded or lacks a required column."""


class ModelResolutionError(VerticoreError):
    """A model spec could not be resolved to weights (e.g. hub id while offline)."""


class ArtifactError(VerticoreError):
    """A saved artifact (model directory, index) is missing, corrupt or incompatible."""


class IndexMismatchError(ArtifactError):
    """An index was built with another model or dimension than the one in use."""
