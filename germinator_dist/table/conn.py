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
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

try:  # redis[hiredis]: the C packer for long commands, instead of redis-py's Python one
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


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}\Z")
# what follows the credentials: host (a name, an IPv4 address or a bracketed IPv6 address), an optional
# port, an optional /db, an optional ?query; nothing else (no fragment, no second path segment)
_AFTER_CREDENTIALS = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(?::(?P<port>\d{1,5}))?(?P<path>/\d{0,5})?"
    r"(?:\?(?P<query>[^@]*))?\Z"
)
_SAFE_USER = re.compile(r"[A-Za-z0-9._~+=-]{1,64}\Z")
_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}\Z")
URL_FORM = "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?OPTION=VALUE&...] (or rediss://)"
SECRET_OPTIONS = ("password", "ssl_password")


def _seconds(v: str) -> float:
    x = float(v)
    if not 0 < x <= 86_400:
        raise ValueError
    return x


def _flag(v: str) -> bool:
    low = v.lower()
    if low not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError
    return low in ("1", "true", "yes")


def _choice(*allowed: str):
    def parse(v: str) -> str:
        if v not in allowed:
            raise ValueError
        return v

    return parse


def _db(v: str) -> int:
    x = int(v)
    if not 0 <= x <= 65_535:
        raise ValueError
    return x


# the query options passed on to redis-py (name -> (parser, what a value must be, TLS only)); any other
# option is refused: redis-py would fail on it with a traceback, or take it silently
URL_OPTIONS: dict[str, tuple[Callable[[str], object], str, bool]] = {
    "db": (_db, "an integer in [0, 65535]", False),
    "socket_timeout": (_seconds, "seconds in (0, 86400]", False),
    "socket_connect_timeout": (_seconds, "seconds in (0, 86400]", False),
    "socket_keepalive": (_flag, "true or false", False),
    "health_check_interval": (lambda v: int(_seconds(v)), "whole seconds in [1, 86400]", False),
    "protocol": (lambda v: int(_choice("2", "3")(v)), "2 or 3", False),
    "client_name": (str, "a name", False),
    "ssl_ca_certs": (str, "a file", True),
    "ssl_ca_path": (str, "a directory", True),
    "ssl_certfile": (str, "a file", True),
    "ssl_keyfile": (str, "a file", True),
    "ssl_cert_reqs": (_choice("none", "optional", "required"), "none, optional or required", True),
    "ssl_check_hostname": (_flag, "true or false", True),
}


@dataclass(frozen=True)
class RedisAddress:
    """A parsed seed-table URL: where to connect and how; ``password`` is never shown (repr=False)."""

    scheme: str
    host: str
    port: int
    db: int
    username: str | None
    password: str | None = field(repr=False)
    ssl_password: str | None = field(repr=False)
    options: tuple[tuple[str, object], ...]
    redacted: str  # the address to show and to hand on: every secret replaced by ***

    def client_kwargs(self) -> dict:
        """Keyword arguments of ``redis.Redis`` for this address (the URL's options included)."""
        kw = dict(self.options)
        kw.update(host=self.host, port=self.port, db=self.db, username=self.username, password=self.password)
        if self.scheme == "rediss":
            kw["ssl"] = True
            if self.ssl_password:
                kw["ssl_password"] = self.ssl_password
        return kw


def _bad(msg: str) -> SpecError:
    return SpecError(f"redis url: {msg}")


def parse_url(url: object, password: str | None = None) -> RedisAddress:
    """Parse a seed-table URL. Raises SpecError naming what is wrong, never showing the URL's secrets.

    The credentials are everything between ``://`` and the URL's *last* ``@``, so a password may hold any
    character (``/ @ : ? # % + =``; a ``%XX`` escape is decoded); a ``USER:`` prefix is split off at the
    first ``:``, and credentials without a ``:`` are the password. So nothing after the last ``@`` is ever
    part of a secret, and only that part (host, port, db, options) appears in a message; a literal ``@``
    in an option value must be written ``%40``. The password comes from the ``password`` argument, the
    URL, or ``GERMINATOR_REDIS_PASSWORD``, in that order; a password ``***`` (a redacted URL) means "not
    in the URL". Options other than those in ``URL_OPTIONS`` (plus ``password``, ``username`` and, for
    ``rediss``, ``ssl_password``) are refused.
    """
    if not isinstance(url, str):
        raise _bad(f"expected a string, got {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        shown = repr(scheme) if sep and _SCHEME.match(scheme) else "none"
        raise _bad(f"expected {URL_FORM}; scheme {shown} (the rest is not shown: it may hold a password)")
    creds, at, tail = rest.rpartition("@")
    m = _AFTER_CREDENTIALS.match(tail)
    if not m:
        where = "the last '@'" if at else "'//'"
        raise _bad(
            f"expected {URL_FORM}; what follows {where} is not HOST[:PORT][/DB][?OPTIONS] "
            "(not shown: it may hold a password)"
        )
    url_user = url_password = None
    if at:
        user, colon, secret = creds.partition(":")
        if not colon:  # redis://PASSWORD@host: AUTH with a password alone
            user, secret = "", creds
        url_user, url_password = unquote(user) or None, unquote(secret) or None
    host = m["host"].strip("[]")
    port = int(m["port"]) if m["port"] else 6379
    if not 1 <= port <= 65_535:
        raise _bad(f"port: expected 1..65535 (value {port})")
    db = int(m["path"][1:]) if m["path"] and m["path"] != "/" else 0
    query = parse_qsl(m["query"] or "", keep_blank_values=True)
    seen: set[str] = set()
    options: list[tuple[str, object]] = []
    ssl_password = None
    for key, value in query:
        if not _OPTION_NAME.match(key):
            raise _bad(f"an option name is not an identifier (expected {URL_FORM})")
        if key in seen:
            raise _bad(f"option {key!r} is given twice")
        seen.add(key)
        if key == "password":
            url_password = value or None
        elif key == "username":
            url_user = value or None
        elif key == "ssl_password" and scheme == "rediss":
            ssl_password = value if value and value != REDACTED else None
        elif key in URL_OPTIONS:
            parse, want, tls_only = URL_OPTIONS[key]
            if tls_only and scheme != "rediss":
                raise _bad(f"option {key!r} needs a rediss:// (TLS) URL")
            try:
                parsed = parse(value)
            except ValueError:
                raise _bad(f"option {key}: expected {want} (value {value!r})") from None
            if key == "db":
                db = parsed
            else:
                options.append((key, parsed))
        else:
            allowed = ", ".join(["password", "username", "ssl_password", *URL_OPTIONS])
            raise _bad(f"option {key!r} is not supported (supported: {allowed})")
    if url_password == REDACTED:  # a redacted URL (SeedTable.url): the password comes from elsewhere
        url_password = None
    secret = password or url_password or os.environ.get(PASSWORD_ENV) or None
    shown_user = url_user if url_user is None or _SAFE_USER.match(url_user) else REDACTED
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if m["port"] else "")
    if secret:
        netloc = f"{shown_user or ''}:{REDACTED}@{netloc}"
    elif shown_user:
        netloc = f"{shown_user}@{netloc}"
    shown_query = [
        (k, REDACTED if k in SECRET_OPTIONS or (k == "username" and v != shown_user) else v) for k, v in query
    ]
    redacted = urlunsplit((scheme, netloc, m["path"] or "", urlencode(shown_query, safe="/*"), ""))
    return RedisAddress(scheme, host, port, db, url_user, secret, ssl_password, tuple(options), redacted)


def split_url(url: object, password: str | None = None) -> tuple[str, str, str | None, str | None]:
    """(address without credentials, redacted address, username, password); SpecError for a bad URL."""
    a = parse_url(url, password)
    clean = a.redacted.replace(f":{REDACTED}@", "@", 1) if a.password or a.ssl_password else a.redacted
    return clean, a.redacted, a.username, a.password


def redact(url: str) -> str:
    """``url`` fit to show: every secret replaced by ***; a URL that does not parse is not shown at all."""
    try:
        return parse_url(url, None).redacted
    except SpecError:
        scheme = url.partition("://")[0] if isinstance(url, str) and "://" in url else ""
        return f"{scheme}://{REDACTED}" if _SCHEME.match(scheme) else REDACTED


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
        address = parse_url(url, password)
        self.redacted = address.redacted
        self.retries, self.backoff, self.max_backoff = retries, float(backoff), float(max_backoff)
        kw = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout}
        kw.update(address.client_kwargs())  # the URL's own timeouts win
        try:
            self.client = redis.Redis(**kw, retry=Retry(NoBackoff(), 0), decode_responses=False)
        except (ValueError, TypeError) as exc:
            raise SpecError(f"redis url {self.redacted}: {type(exc).__name__}") from None

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
