"""The ``germinator-dist`` command line (``commands.main``) and its demos."""

from germinator_dist.cli.commands import main

__all__ = ["main"]
