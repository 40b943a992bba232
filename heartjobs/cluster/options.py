"""How to submit: the options of `heartjobs submit` (executor, sbatch options, time limit), Slurm's time
formats, and the text an option may hold (submitit writes options into the batch script as lines)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from heartjobs.errors import HeartjobsError

DEFAULT_TIME = {"slurm": "24:00:00", "local": "30-00:00:00"}


@dataclass(frozen=True)
class SubmitOptions:
    """How to submit: the executor and, for Slurm, the sbatch options (see `heartjobs submit --help`)."""

    executor: str = "slurm"
    partition: str | None = None
    gpus_per_job: int | None = None  # None: see resolve_gpus
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    time: str | None = None  # Slurm's format; default DEFAULT_TIME[executor]
    array_parallelism: int | None = None  # Slurm: all at once; local: 1 (one job per device)
    container: Path | None = None
    account: str | None = None
    qos: str | None = None
    setup: tuple[str, ...] = ()
    signal_delay_s: int = 120
    max_timeouts: int = 10
    force: bool = False
    extra: dict = field(default_factory=dict)  # further sbatch options, e.g. {"constraint": "a100"}

    def __post_init__(self) -> None:
        for option, value in (
            ("--partition", self.partition),
            ("--account", self.account),
            ("--qos", self.qos),
            ("--time", self.time),
            ("--container", self.container),
            *(("--setup", line) for line in self.setup),
            *(("--sbatch", key if value is True else f"{key}={value}") for key, value in self.extra.items()),
        ):
            refuse_control_characters(option, value)

    @property
    def minutes(self) -> float:
        return parse_time(self.time or DEFAULT_TIME[self.executor])


def parse_time(text: str) -> float:
    """Slurm's time formats (MINUTES, MINUTES:SECONDS, H:M:S, D-H, D-H:M, D-H:M:S) in minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise HeartjobsError(f"--time: {text!r} is not a Slurm time (MINUTES, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    if days is not None:
        minutes = int(days) * 1440 + int(a) * 60 + int(b or 0) + int(c or 0) / 60
    elif c is not None:
        minutes = int(a) * 60 + int(b) + int(c) / 60
    else:
        minutes = int(a) + int(b or 0) / 60
    if minutes <= 0:
        raise HeartjobsError(f"--time: {text!r} must be longer than zero")
    return minutes


def refuse_control_characters(option: str, value: object) -> None:
    """Refuse a newline or any other control character in an option's text: submitit writes the sbatch
    options as `#SBATCH --key='value'` lines and --setup as lines of the batch script, so a newline would
    end the line and make the rest a shell command (and --folder is in the #SBATCH --output line)."""
    if value is None:
        return
    text = str(value)
    bad = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        hint = "; give one --setup per line" if option == "--setup" else ""
        raise HeartjobsError(
            f"{option}: {text!r} holds a control character ({bad!r}), which the batch script can't take{hint}"
        )
