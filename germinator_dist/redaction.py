"""Keeping secrets out of what is shown: addresses with credentials redacted, and known secrets scrubbed
from messages that other libraries wrote (docs/security.md). Imports nothing heavy: the CLI uses it on
every error."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, quote, unquote

SECRET_QUERY_KEYS = ("password", "token", "ssl_password")


def redact_address(address: str | None) -> str | None:
    """``address`` fit to show or store: its credentials (everything between ``://`` and the last ``@``)
    replaced by ``***``, and the values of ``password``/``token`` query arguments too."""
    if not address:
        return address
    scheme, sep, rest = address.partition("://") if "://" in address else ("", "", address)
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    head, q, query = rest.partition("?")
    if q:
        args = [
            f"{k}=***" if k.lower() in SECRET_QUERY_KEYS else f"{k}={v}"
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        rest = head + "?" + "&".join(args)
    return f"{scheme}{sep}{rest}"


def url_secrets(*urls: str | None) -> list[str]:
    """Every secret the given addresses carry (their credentials and password/token query values, raw and
    percent-decoded), plus ``GERMINATOR_REDIS_PASSWORD``: what ``scrub`` removes from a message."""
    found: list[str] = [os.environ.get("GERMINATOR_REDIS_PASSWORD") or ""]
    for url in urls:
        if not isinstance(url, str):
            continue
        rest = url.split("://", 1)[-1]
        if "@" in rest:
            creds = rest.rpartition("@")[0]
            found += [creds, creds.partition(":")[2]]
        for k, v in parse_qsl(rest.partition("?")[2], keep_blank_values=True):
            if k.lower() in SECRET_QUERY_KEYS:
                found.append(v)
    found += [unquote(s) for s in found]
    found += [quote(s, safe="") for s in found]
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***`` (the longest first)."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
