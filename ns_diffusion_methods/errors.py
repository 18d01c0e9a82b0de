"""Errors a user can act on, and how every command shows them.

Each message says what is wrong, which file or model it concerns, and what to do. Such an error ends a command with
``Error: <message>`` on stderr and exit status 1, without a traceback: ``ns-diffusion`` catches it in its entry point
(:func:`ns_diffusion_methods.cli.main.entrypoint`), and nerfstudio's own commands (``ns-train``, ``ns-eval``,
``ns-render``, ``ns-viewer``) get the same through :func:`install_excepthook`, which importing the package runs
(nerfstudio imports its plugins, this package among them, when any of its commands starts). Every other exception
keeps its traceback.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Optional, Type


class UserFacingError(Exception):
    """Bad input or a missing resource, with a message that tells the user how to fix it."""


class DataError(UserFacingError, ValueError):
    """A capture, mask or dataset file is missing, unreadable or inconsistent."""


class ModelUnavailableError(UserFacingError, OSError):
    """Diffusion weights named by a Hugging Face id or folder are neither cached, reachable nor complete."""


class ResourceError(UserFacingError, RuntimeError):
    """The machine lacks what a step needs (GPU memory) even after the package's fallbacks (smaller chunks)."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is torch's (CUDA) out-of-memory error, by type or by message (without importing torch)."""
    return type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower()


def print_user_error(error: UserFacingError) -> None:
    """Write ``Error: <message>`` to stderr (plain text: messages hold paths and brackets, not markup)."""
    sys.stderr.write(f"Error: {error}\n")
    sys.stderr.flush()


def _excepthook(exc_type: Type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> None:
    if isinstance(exc, UserFacingError):
        print_user_error(exc)  # the interpreter then exits with status 1, as for any uncaught exception
    else:
        _previous_hook(exc_type, exc, tb)


_previous_hook = sys.excepthook


def install_excepthook() -> None:
    """Show uncaught :class:`UserFacingError` s as ``Error: <message>``; other exceptions go to the previous hook.

    Idempotent. Only the main thread's uncaught exceptions pass through ``sys.excepthook``; with several GPUs,
    nerfstudio's worker processes report errors through ``torch.multiprocessing`` with their traceback.
    """
    global _previous_hook
    if sys.excepthook is not _excepthook:
        _previous_hook = sys.excepthook
        sys.excepthook = _excepthook
