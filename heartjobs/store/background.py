"""Writes off training's critical path: a copy of the state on the host, written by one background thread.

`host_copy` takes a deep copy of a state (every tensor copied to the CPU; on CUDA into pinned memory with
non-blocking copies and one synchronize before it is handed over), so training can go on changing the
originals while the copy is written. `BackgroundWriter` runs one write at a time on its own thread: the
next submit waits for the write in flight, and an error in a write is raised in the caller's thread at
the next submit or wait (never lost). Leaving it as a context manager waits for the write in flight.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator

import torch


def host_copy(state: object, device: torch.device | str = "cpu") -> object:
    """A deep copy of `state` (copy.deepcopy: the same container types, a state_dict's metadata included,
    and the same sharing) whose tensors are fresh host tensors with the originals' values: what torch.save
    writes from it is what it would have written from the originals, byte for byte on the CPU. Tensors on
    CUDA go to pinned memory (same strides), copied without blocking; the copy is complete (synchronized)
    when this returns."""
    memo: dict[int, object] = {}
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        for tensor in _tensors(state):
            if tensor.device.type == "cuda" and id(tensor) not in memo:
                pinned = torch.empty_strided(
                    tensor.size(), tensor.stride(), dtype=tensor.dtype, device="cpu", pin_memory=True
                )
                memo[id(tensor)] = pinned.copy_(tensor.detach(), non_blocking=True)
        copied = copy.deepcopy(state, memo)
        torch.cuda.synchronize()  # the non-blocking copies have landed before another thread reads them
        return copied
    return copy.deepcopy(state, memo)


def _tensors(value: object) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


class BackgroundWriter:
    """One write at a time, on a thread of its own. submit(write) first waits for the previous write (and
    raises its error, if it failed), then starts `write` in the background; wait() waits for the write in
    flight and raises its error. As a context manager, leaving waits for the write in flight; when the
    block itself failed, a failed write is added to that error as a note rather than replacing it."""

    def __init__(self, name: str = "heartjobs-writer") -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[[], object]) -> None:
        self.wait()

        def run() -> None:
            try:
                write()
            except BaseException as exc:  # handed to the caller's thread at its next submit or wait
                self._error = exc

        self._thread = threading.Thread(target=run, name=self._name)
        self._thread.start()

    def wait(self) -> None:
        """Wait for the write in flight; its error, if it failed, is raised here."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.wait()
            return
        try:
            self.wait()
        except BaseException as failed:  # both failed: the block's error stays the one raised
            exc.add_note(f"a background write also failed: {type(failed).__name__}: {failed}")
