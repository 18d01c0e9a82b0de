"""Progress bars of the long test-time loops: sampling, reconstruction and inpainting.

Long loops (a reverse diffusion chain of 1000 steps per object, guided sampling and fine-tuning per held-out object)
show two bars: an outer one per object and a transient inner one per step, which disappears when its object is done.
The loops themselves only call a :data:`StepCallback` ``on_step(done, total)``; the commands and ``ns-eval`` turn it
into a bar with :func:`step_task`. Nothing is printed where the console is not a terminal (logs stay clean).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: ``on_step(done, total)``: called after each step of a loop with the steps done so far and the loop's length
StepCallback = Callable[[int, int], None]


def progress_bars(console: Optional[Console] = None) -> Progress:
    """A rich ``Progress`` for object and step bars (description, bar, count, elapsed and remaining time); transient:
    the bars are cleared when the ``with`` block ends (print a summary after it)."""
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)


class StepBar:
    """A transient inner bar of a ``Progress``: call it as a :data:`StepCallback`; :meth:`describe` renames it."""

    def __init__(self, progress: Progress, description: str) -> None:
        self.progress = progress
        self.task = progress.add_task(description, total=None)

    def __call__(self, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total, refresh=True)

    def describe(self, description: str) -> None:
        """Show ``description`` in front of the bar from now on."""
        self.progress.update(self.task, description=description)


@contextlib.contextmanager
def step_task(progress: Progress, description: str) -> Iterator[StepBar]:
    """An inner bar of ``progress`` for the ``with`` block (a :class:`StepBar`, usable as the loop's
    :data:`StepCallback`); it is removed when the block ends."""
    bar = StepBar(progress, description)
    try:
        yield bar
    finally:
        progress.remove_task(bar.task)


__all__ = ["StepBar", "StepCallback", "progress_bars", "step_task"]
