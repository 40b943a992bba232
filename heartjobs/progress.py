"""Progress for long work: a rich bar on a terminal, a few plain lines otherwise (logs, CI); and the console
heartjobs prints through."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from heartjobs.errors import printable


class PlainConsole(Console):
    """A rich Console whose text arguments print with control characters escaped (errors.printable): what it
    prints holds paths, job names and values from files nobody vetted, which must not drive the terminal.
    Markup is off for the same reason: a path with [x] in it prints as it is."""

    def __init__(self, **options):
        super().__init__(soft_wrap=True, markup=False, **options)

    def print(self, *objects, **options) -> None:
        super().print(*(printable(o, keep="\n\t") if isinstance(o, str) else o for o in objects), **options)


console = PlainConsole(stderr=True)


def _plain_reporter(description: str, total: int, steps: int = 10) -> Callable[[int], None]:
    """Print `description: done/total` at about every 1/steps of the work, and at the end."""
    done = 0
    next_mark = 0

    def advance(n: int = 1) -> None:
        nonlocal done, next_mark
        done += n
        if done >= next_mark or done == total:
            print(f"{printable(description)}: {done}/{total}", file=sys.stderr, flush=True)
            while next_mark <= done:
                next_mark += max(1, total // steps)

    return advance


@contextlib.contextmanager
def track(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n=1)`; shows a rich progress bar when stderr is a terminal."""
    if not console.is_terminal:
        yield _plain_reporter(description, total)
        return
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


class TrainingProgress:
    """Training progress: on a terminal a rich bar for epochs and one for batches (with images/s and the
    last epoch's losses); otherwise one plain line per epoch."""

    def __init__(self, title: str, epochs: int, batches: int, done: int = 0):
        self.title, self.epochs, self.batches, self.done = title, epochs, batches, done
        self._bar: Progress | None = None

    def __enter__(self) -> TrainingProgress:
        if console.is_terminal:
            self._bar = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}", markup=False),
                TimeRemainingColumn(),
                console=console,
            )
            self._bar.__enter__()
            self._epochs = self._bar.add_task(self.title, total=self.epochs, completed=self.done, info="")
            self._batch = self._bar.add_task("  batch", total=self.batches, info="")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def batch(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._batch, completed=done, total=total)

    def epoch(self, stats: dict) -> None:
        text = (
            f"d_loss {stats['d_loss']:.4f}  g_loss {stats['g_loss']:.4f}  "
            f"{stats['images_per_s']:.1f} img/s  {stats['seconds']:.1f} s"
        )
        if self._bar is not None:
            self._bar.update(self._epochs, completed=stats["epoch"], info=text)
            self._bar.update(self._batch, completed=0, info=f"last epoch: {text}")
        else:
            print(f"{self.title}: epoch {stats['epoch']}/{self.epochs}  {text}", file=sys.stderr, flush=True)
