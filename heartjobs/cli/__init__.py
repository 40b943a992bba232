"""Interface: the `heartjobs` command, a thin layer over the packages below."""

from heartjobs.cli.main import main

__all__ = ["main"]
