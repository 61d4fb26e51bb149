"""The seed table's Redis connection: URL and password handling, redaction, retries with backoff.

The password is taken from (in order) the ``password`` argument, the URL (``redis://:PASSWORD@host``), or the
environment variable ``GERMINATOR_REDIS_PASSWORD``. It never appears in a repr or an error: every address
shown is redacted (``redis://:***@host:port/db``). A redacted URL is a valid address: its ``***`` password
means "from the argument or the environment", so ``SeedTable.url`` can be handed to another process.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

try:  # redis[hiredis]: the C packer, ~2x faster than redis-py's wrapper around it for long commands
    import hiredis
except ImportError:  # pragma: no cover - redis-py's own packer then
    hiredis = None

from ..errors import ConnectionFailed, JobNotFound, SpecError, TableError

PASSWORD_ENV = "GERMINATOR_REDIS_PASSWORD"
REDACTED = "***"
T = TypeVar("T")
_SCRIPT_SUFFIX = re.compile(r" script: [0-9a-f]{40}, on @user_script:\d+\.$")
_CODES: dict[str, type[Exception]] = {
    "GERM_NOJOB": JobNotFound,
    "GERM_SPEC": SpecError,
    "GERM_TABLE": TableError,
    "GERM_EXISTS": TableError,
    "GERM_STATE": TableError,
}


def split_url(url: object, password: str | None = None) -> tuple[str, str, str | None, str | None]:
    """Return (url without credentials, redacted url, username, password); SpecError for a bad URL."""
    if not isinstance(url, str):
        raise SpecError(f"redis url: expected a string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SpecError(f"redis url: cannot parse it ({exc})") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise SpecError(f"redis url: expected redis://host[:port][/db] or rediss://..., got {redact(url)}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    url_password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username else None
    for k, v in query:
        if k == "password":
            url_password = v
        elif k == "username":
            username = v
    if url_password == REDACTED:  # a redacted URL (SeedTable.url): the password comes from elsewhere
        url_password = None
    password = password or url_password or os.environ.get(PASSWORD_ENV) or None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{port}" if port else "")
    clean_query = urlencode([(k, v) for k, v in query if k not in ("password", "username")])
    clean = urlunsplit((parts.scheme, netloc, parts.path, clean_query, ""))
    shown_user = username or ""
    shown = f"{shown_user}:***@{netloc}" if password else (f"{shown_user}@{netloc}" if username else netloc)
    return clean, urlunsplit((parts.scheme, shown, parts.path, clean_query, "")), username, password


def redact(url: str) -> str:
    """``url`` with any password (in the userinfo or a ``password=`` query argument) replaced by ***."""
    url = re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


class Connection:
    """A redis client with one retry loop: ConnectionError/TimeoutError -> backoff -> ConnectionFailed.

    ``retries`` further attempts follow the first, sleeping ``backoff * 2**i`` seconds (at most
    ``max_backoff``) before attempt i+1. redis-py's own retries are off so that this budget is the only one.
    """

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        retries: int = 6,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        socket_timeout: float = 10.0,
        connect_timeout: float = 2.0,
    ) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise SpecError(f"retries: {retries!r} is not a non-negative integer")
        if not backoff >= 0 or not max_backoff >= 0:
            raise SpecError(f"backoff: {backoff!r}/{max_backoff!r} must be non-negative seconds")
        clean, self.redacted, username, secret = split_url(url, password)
        self.retries, self.backoff, self.max_backoff = retries, float(backoff), float(max_backoff)
        try:
            self.client = redis.Redis.from_url(
                clean,
                username=username,
                password=secret,
                retry=Retry(NoBackoff(), 0),
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                decode_responses=False,
            )
        except (ValueError, TypeError) as exc:
            raise SpecError(f"redis url {self.redacted}: {exc}") from None

    def call(self, what: str, fn: Callable[[redis.Redis], T]) -> T:
        """Run ``fn(client)``, retrying on connection loss; map Redis errors to the project's errors.

        Raises ConnectionFailed (naming the redacted URL) once the retries are spent or authentication
        fails, and TableError / SpecError / JobNotFound for what a script or Redis refused.
        """
        start = time.monotonic()
        for attempt in range(self.retries + 1):
            try:
                return fn(self.client)
            except redis.AuthenticationError as exc:
                raise ConnectionFailed(f"redis at {self.redacted} refused the credentials: {exc}") from None
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if attempt == self.retries:
                    took = time.monotonic() - start
                    raise ConnectionFailed(
                        f"redis at {self.redacted} did not answer {what} after {attempt + 1} attempts "
                        f"over {took:.1f}s: {exc}"
                    ) from exc
                time.sleep(min(self.max_backoff, self.backoff * 2**attempt))
            except redis.ResponseError as exc:
                raise map_error(exc, what) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()


def stream_script(client: redis.Redis, script, calls: Sequence[tuple[list, list]]) -> list:
    """Run ``script`` once per (keys, args) call on one connection, pipelined: each call is packed and sent
    while Redis already runs the ones before it; then every reply is read, in order. A reply that is an error
    comes back as the exception object. Calls refused with NOSCRIPT (Redis forgot the script: a restart or
    SCRIPT FLUSH) did not run; the script is loaded again and they are sent once more.

    Raises redis.ConnectionError / TimeoutError (the connection is then dropped, not reused).
    """
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        replies = _send_and_read(conn, script.sha, calls)
        again = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if again:
            script.sha = client.script_load(script.script)
            for i, r in zip(again, _send_and_read(conn, script.sha, [calls[i] for i in again]), strict=True):
                replies[i] = r
        return replies
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _send_and_read(conn, sha: str, calls: Sequence[tuple[list, list]]) -> list:
    for keys, args in calls:
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        packed = [hiredis.pack_command(command)] if hiredis else conn.pack_command(*command)
        conn.send_packed_command(packed, check_health=False)
    replies: list = []
    for _ in calls:
        try:
            replies.append(conn.read_response())
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies


def map_error(exc: redis.ResponseError, what: str) -> Exception:
    """The project error for a Redis error reply (a script's GERM_* code, WRONGTYPE, OOM, ...)."""
    msg = _SCRIPT_SUFFIX.sub("", str(exc))
    code, _, rest = msg.partition(" ")
    if code in _CODES:
        return _CODES[code](rest)
    return TableError(f"redis refused {what}: {msg}")
