"""Errors that a user can act on.

Every refusal says which input it is about, what is wrong with it, and what to do, so that a
radiologist reading a CLI message or a Slicer dialog never has to read a traceback.
"""

from __future__ import annotations

from pathlib import Path


class FemurScreenError(Exception):
    """An error caused by the input or the environment, with advice for the user."""

    def __init__(self, what: str, fix: str = "", path: str | Path | None = None) -> None:
        self.what = what
        self.fix = fix
        self.path = None if path is None else str(path)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = []
        if self.path:
            parts.append(f"{self.path}: ")
        parts.append(self.what.rstrip("."))
        parts.append(".")
        if self.fix:
            parts.append(" " + self.fix.rstrip(".") + ".")
        return "".join(parts)


class InputError(FemurScreenError):
    """The input file or folder cannot be used (missing, unreadable, not CT...)."""


class NoFemurError(FemurScreenError):
    """No proximal femur was found in the field of view."""


class ModelError(FemurScreenError):
    """A model file is missing, corrupted, tampered with or does not match its manifest."""
