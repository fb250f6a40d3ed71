"""Progress for long loops: `progress_bar`, a Rich bar with a rate and an ETA that is silent when
the output is not a terminal (logs and tests get the summary lines only), and `progress`, which
off a terminal prints a plain line now and then instead (for loops that run for minutes)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else "", style="cyan")


@contextmanager
def progress_bar(console: Console | None, label: str, total: int, unit: str = "img") -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; a no-op when there is no interactive console."""
    if console is None or not console.is_terminal or console.quiet:
        yield lambda n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(unit),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


@contextmanager
def progress(console: Console | None, label: str, total: int) -> Iterator[Callable[[int], None]]:
    """The Rich bar on a terminal; elsewhere (a log file, a pipe, a batch job) a plain line now
    and then, where the bar would stay silent through a run of many minutes."""
    if console is not None and not console.is_terminal and not console.quiet:
        yield ProgressLines(console, label, total)
        return
    with progress_bar(console, label, total) as advance:
        yield advance


class ProgressLines:
    """`advance(n)` that prints `LABEL: done/total images (p%), rate images/s, about T left`
    at every tenth of the work and at least every `every_seconds`."""

    def __init__(self, console: Console, label: str, total: int, every_seconds: float = 30.0) -> None:
        self.console, self.label, self.total, self.every = console, label, total, every_seconds
        self.done = 0
        self.start = self.last = time.perf_counter()
        self.next_tenth = 1

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        tenth = self.done * 10 // max(self.total, 1)
        if self.done >= self.total or (tenth < self.next_tenth and now - self.last < self.every):
            return  # the command's summary line follows the last image
        self.next_tenth, self.last = tenth + 1, now
        rate = self.done / max(now - self.start, 1e-9)
        left = (self.total - self.done) / rate
        self.console.print(
            f"{self.label}: {self.done}/{self.total} images ({self.done / self.total:.0%}), {rate:.1f} images/s, "
            f"about {_duration(left)} left",
            markup=False,
            highlight=False,
        )


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
