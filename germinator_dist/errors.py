"""One small error hierarchy, raised at the boundary (CLI, table, checkpoint, spec loading).

Every message is one line that names the field (or key, or file) and the offending value, so the CLI can
print it as-is and exit non-zero without a traceback.
"""

from __future__ import annotations


class GerminatorError(Exception):
    """Base class of every error the project raises on purpose."""


class SpecError(GerminatorError, ValueError):
    """An invalid model/job spec, seed, or argument: names the field and the value."""


class CheckpointError(GerminatorError):
    """A checkpoint file that is truncated, of a wrong version, or does not match its spec."""


class TableError(GerminatorError):
    """The seed table refused an operation or holds malformed content (names the key and value)."""


class JobBusy(TableError):
    """The job already has a driver (its lease is held by a live owner): names the owner."""


class Interrupted(GerminatorError):
    """A command stopped by a signal (Ctrl-C, SIGTERM, ...) after undoing what it had written."""


class ConnectionFailed(GerminatorError):
    """A Redis or Ray address that does not answer (after retries); names the address tried."""


class JobNotFound(GerminatorError, KeyError):
    """An unknown job id."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it one plain line.
        return str(self.args[0]) if self.args else "job not found"
