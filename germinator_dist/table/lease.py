"""The driver lease half of ``SeedTable``: at most one driver per job (docs/table.md, "The driver lease").

A lease is an owner id and an expiry on the Redis server's clock, under ``germ:{JOB}:lease``. It is taken
by compare-and-set (``claim_lease``, one Lua script): a claim succeeds when nobody holds the lease, when it
has expired, when the claimant already holds it, or when the claimant names the holder it replaces
(``take_from``: one that Ray says has ended). Any other claim is refused with ``JobBusy`` naming the holder.
The holder renews it (``renew_lease``) and gives it up with its last state change (``release_lease``).

A mixin: ``germinator_dist.table.SeedTable`` provides ``_run``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import JobBusy, SpecError
from ..records import JobState, Lease
from .codec import Keys, check_member_id, decode_float, decode_text

MAX_TTL_S = 86_400.0


def lease_ttl_ms(ttl: object) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0.001 <= ttl <= MAX_TTL_S:
        raise SpecError(f"lease ttl: {ttl!r} is not a number of seconds in [0.001, {MAX_TTL_S:.0f}]")
    return int(ttl * 1000)


def _state_arg(state: object, what: str) -> str:
    try:
        return JobState(state).value
    except ValueError:
        raise SpecError(f"{what}: {state!r} is not one of {[s.value for s in JobState]}") from None


def lease_key(job: str) -> str:
    return Keys(job).prefix + "lease"


class LeaseMixin:
    """Driver lease operations of the seed table (mixed into SeedTable)."""

    def _run(self, name: str, keys: list[str], args: list, what: str) -> Any:
        raise NotImplementedError

    def claim_lease(
        self,
        job: str,
        owner: str,
        ttl: float,
        *,
        take_from: str = "",
        states: Iterable[JobState | str] = (JobState.PENDING, JobState.RUNNING),
        to_state: JobState | str | None = None,
    ) -> JobState:
        """Make ``owner`` the job's driver for ``ttl`` seconds; return the job's state before the claim.

        In the same script: the job must be in one of ``states`` (TableError otherwise, nothing changed), and
        it moves to ``to_state`` when that is a legal transition from its state (e.g. FAILED -> RUNNING for a
        resume). A claim by the current holder renews it. Raises JobBusy (naming the holder and how long its
        lease still runs) when another owner holds an unexpired lease that is not ``take_from``; SpecError,
        JobNotFound.
        """
        keys = Keys(job)
        args = [
            check_member_id(owner),
            lease_ttl_ms(ttl),
            check_member_id(take_from) if take_from else "",
            " ".join(_state_arg(s, "states") for s in states),
            _state_arg(to_state, "to_state") if to_state is not None else "",
        ]
        res = self._run("LEASE_CLAIM", [keys.meta, lease_key(job)], args, "claim_lease")
        if int(res[0]) == 1:
            return JobState(decode_text(res[1], keys.meta, "state"))
        holder = decode_text(res[1], lease_key(job), "owner")
        left = decode_float(res[2], lease_key(job), "expires") / 1000
        raise JobBusy(f"job {job} already has a driver: {holder} holds its lease (for {left:.1f}s more)")

    def renew_lease(self, job: str, owner: str, ttl: float) -> bool:
        """Extend ``owner``'s lease to ``ttl`` seconds from now. False when ``owner`` does not hold it (it
        was taken over after it expired): that driver must stop. Raises SpecError, JobNotFound."""
        keys = Keys(job)
        args = [check_member_id(owner), lease_ttl_ms(ttl)]
        return int(self._run("LEASE_RENEW", [keys.meta, lease_key(job)], args, "renew_lease")) == 1

    def release_lease(self, job: str, owner: str, final: JobState | str | None = None) -> bool:
        """Give up ``owner``'s lease; with ``final``, the job (if still RUNNING) moves to that state in the
        same script. False (nothing changed) when ``owner`` does not hold it. Raises SpecError,
        JobNotFound."""
        keys = Keys(job)
        args = [check_member_id(owner), _state_arg(final, "final") if final is not None else ""]
        return int(self._run("LEASE_RELEASE", [keys.meta, lease_key(job)], args, "release_lease")) == 1

    def lease(self, job: str) -> Lease | None:
        """The job's lease (expired ones too, until someone takes or releases them), or None. Raises
        JobNotFound, TableError (a malformed lease)."""
        keys = Keys(job)
        key = lease_key(job)
        res = self._run("LEASE_READ", [keys.meta, key], [], "lease")
        if len(res) == 1:
            return None
        now_ms = decode_float(res[0], key, "now")
        owner = decode_text(res[1], key, "owner")
        expires = decode_float(res[2], key, "expires")
        since = decode_float(res[3], key, "since")
        return Lease(
            owner=owner, since=since, expires_at=expires / 1000, expires_in=(expires - now_ms) / 1000
        )
