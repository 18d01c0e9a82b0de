"""Errors a user can act on.

Each message says what is wrong, which file or model it concerns, and what to do. Commands print them without a
traceback (see ``ns_diffusion_methods.cli.main.entrypoint``); nerfstudio's own commands show them as raised.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """Bad input or a missing resource, with a message that tells the user how to fix it."""


class DataError(UserFacingError, ValueError):
    """A capture, mask or dataset file is missing, unreadable or inconsistent."""


class ModelUnavailableError(UserFacingError, OSError):
    """Diffusion weights named by a Hugging Face id or folder are neither cached, reachable nor complete."""
