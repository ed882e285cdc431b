"""Keep secrets out of everything we print: logs, error messages, CLI output, HTTP bodies.

Database URLs carry passwords in more places than ``user:password@``: drivers also take
``?password=``, ``?sslpassword=`` and even a whole second URL in ``?dbname=``. And a URL that does
not parse (a typo) must never be echoed at all, because we cannot tell where its secret is. Every
place that shows a URL goes through ``redact_url``; every message that quotes a driver's error goes
through ``scrub`` with the secrets of the URL in use.

Nothing here imports a driver or connects; it only parses text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

MASK = "***"
# Query parameters whose value is a secret (libpq: password, sslpassword; others: token, key...).
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|credential", re.IGNORECASE)
# userinfo of a URL nested in a value: scheme://user:password@host
_NESTED_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@"
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}")
MIN_SCRUBBED_LENGTH = 3  # shorter "secrets" would blank out ordinary words of a message


def parse_url(raw: str) -> URL | None:
    """The parsed URL, or None when SQLAlchemy cannot read it (then it must not be shown)."""
    try:
        return make_url(raw)
    except (ArgumentError, ValueError):
        return None


def why_unreadable(raw: str) -> str:
    """Why SQLAlchemy cannot read a URL, in words that quote none of it ("" if it can)."""
    try:
        make_url(raw)
    except ArgumentError:
        return "it is not in the form dialect+driver://user:password@host:port/database"
    except ValueError:  # int() of the port
        return "its port is not a number"
    return ""


def redact_url(raw: str | URL) -> str:
    """The URL as it may be shown: passwords masked wherever the drivers accept them.

    A URL that does not parse is not shown at all, only its scheme (when it looks like one), since
    nobody can say which part of a malformed URL is the password.
    """
    url = raw if isinstance(raw, URL) else parse_url(raw)
    if url is None:
        scheme = str(raw).partition(":")[0]
        shown = f"{scheme}:..." if _SCHEME.fullmatch(scheme) and ":" in str(raw) else "..."
        return f"<unreadable URL {shown}, the rest hidden as it may hold a password>"
    if url.password is None and not url.query:
        return raw if isinstance(raw, str) else url.render_as_string()  # nothing to hide
    shown = url.set(query={}).render_as_string(hide_password=True)
    pairs = [
        f"{key}={MASK if _SECRET_KEY.search(key) else quote(_mask_nested(item), safe='*:/@,')}"
        for key, value in url.query.items()
        for item in (value if isinstance(value, tuple) else (value,))
    ]
    return f"{shown}?{'&'.join(pairs)}" if pairs else shown


def _mask_nested(value: str) -> str:
    return _NESTED_USERINFO.sub(rf"\g<scheme>\g<user>:{MASK}@", value)


def secrets_of(raw: str) -> tuple[str, ...]:
    """Every secret a URL holds (its password, secret query values, nested passwords)."""
    url = parse_url(raw)
    if url is None:
        return (raw,)  # unreadable: the whole text is treated as secret
    found: list[str] = [url.password] if url.password else []
    for key, value in url.query.items():
        for item in value if isinstance(value, tuple) else (value,):
            if _SECRET_KEY.search(key):
                found.append(item)
            found += [match.group("password") for match in _NESTED_USERINFO.finditer(item)]
    return tuple(secret for secret in found if secret)


def scrub(message: str, secrets: Iterable[str]) -> str:
    """``message`` with every occurrence of each secret replaced by the mask."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SCRUBBED_LENGTH:
            message = message.replace(secret, MASK)
    return message
