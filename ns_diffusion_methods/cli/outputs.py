"""Where ``ns-diffusion`` commands write when ``--output`` is not given.

One pattern for every command: ``outputs/ns-diffusion/<command words>/<timestamp>``, next to the runs ``ns-train``
writes (``outputs/<experiment>/<method>/<timestamp>``), e.g. ``outputs/ns-diffusion/sample/ssdnerf/2025-01-31_154500``
or ``outputs/ns-diffusion/benchmark/ssdnerf-objects/2025-01-31_154500``. The timestamp (nerfstudio's format) keeps
earlier results; the commands print the folder they wrote.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

#: the folder every default output lies in
OUTPUT_ROOT = Path("outputs") / "ns-diffusion"


def default_output(*words: str, timestamp: Optional[str] = None) -> Path:
    """``outputs/ns-diffusion/<words...>/<timestamp>``; ``timestamp`` defaults to now (``%Y-%m-%d_%H%M%S``)."""
    stamp = timestamp if timestamp is not None else datetime.now().strftime("%Y-%m-%d_%H%M%S")
    return OUTPUT_ROOT.joinpath(*words, stamp)


__all__ = ["OUTPUT_ROOT", "default_output"]
