"""Why a job's runner failed: the job's ``error`` document, written by the runner while it holds the
job's lease, read by ``submit`` (its one-line error) and ``status``. Imports no torch, so ``status`` reads
it without loading the model code."""

from __future__ import annotations

import json

from germinator_dist.table_protocol import JobRegistry

ERROR_DOC = "error"  # the job document's name


def record_error(table: JobRegistry, job: str, message: str, owner: str = "", kind: str = "") -> None:
    """Keep why the job's runner failed: the message's first line, the runner, the exception's class
    name."""
    line = (message.strip().splitlines() or [""])[0][:2000]
    table.put_doc(job, ERROR_DOC, json.dumps({"error": line, "owner": owner, "kind": kind}))


def clear_error(table: JobRegistry, job: str) -> None:
    """Forget an earlier runner's error (a resumed job starts clean)."""
    if table.get_doc(job, ERROR_DOC) is not None:
        table.put_doc(job, ERROR_DOC, "null")


def recorded_error(table: JobRegistry, job: str) -> tuple[str, str] | None:
    """The recorded runner error of the job as (message, exception class name or ''), or None."""
    raw = table.get_doc(job, ERROR_DOC)
    doc = json.loads(raw) if raw else None
    said = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(said, str):
        return None
    kind = doc.get("kind")
    return said, kind if isinstance(kind, str) else ""
