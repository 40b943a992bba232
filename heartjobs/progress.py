"""Progress for long work: a rich bar on a terminal, a few plain lines otherwise (logs, CI)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)


def _plain_reporter(description: str, total: int, steps: int = 10) -> Callable[[int], None]:
    """Print `description: done/total` at about every 1/steps of the work, and at the end."""
    done = 0
    next_mark = 0

    def advance(n: int = 1) -> None:
        nonlocal done, next_mark
        done += n
        if done >= next_mark or done == total:
            print(f"{description}: {done}/{total}", file=sys.stderr, flush=True)
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
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
