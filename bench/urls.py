"""Store and Optuna storage URLs as people see them: with the password hidden.

Every message, log line, table and stored provenance that shows a URL shows `shown_url(url)`; free
text that may quote one (a command line, a database driver's error) goes through `hide_passwords`.
A password can also stay out of the URL altogether: PostgreSQL's client library reads PGPASSWORD
and ~/.pgpass when the URL has none.
"""
from __future__ import annotations

import re
from urllib.parse import quote

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

HIDDEN = "***"

# scheme://user:password@ in free text. SQLAlchemy reads a password up to the '@'; in free text it
# also ends at whitespace or a quote, which end a word of a command line or of a message.
_USERINFO = re.compile(r"(?P<keep>[\w+.-]+://[^:/@\s'\"]*:)(?P<password>[^@\s'\"]*)@")
# libpq also takes the password as a query parameter: ...?password=...
_QUERY = re.compile(r"(?P<keep>[?&]password=)(?P<password>[^&\s'\"]*)")


def shown_url(url: str) -> str:
    """`url` with its password as ***; a string that is not a URL (a Journal file path) as it is."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # not a URL, or one SQLAlchemy cannot read (a bad port)
        return hide_passwords(url)
    if parsed.password is None and "password" not in parsed.query:
        return url  # as the user wrote it (SQLAlchemy would re-encode some of it)
    return hide_passwords(parsed.render_as_string(hide_password=True))


def hide_passwords(text: str, url: str | None = None) -> str:
    """`text` with the password of every URL in it as ***, and `url`'s password wherever it appears
    on its own (a database driver's error may quote it without the URL)."""
    text = _QUERY.sub(rf"\g<keep>{HIDDEN}", _USERINFO.sub(rf"\g<keep>{HIDDEN}@", text))
    for secret in _passwords(url) if url else ():
        for form in {secret, quote(secret, safe="")}:
            text = text.replace(form, HIDDEN)
    return text


def error_line(error: Exception, url: str) -> str:
    """The first line of a database error (the driver's own message when SQLAlchemy wraps one),
    with `url`'s password hidden."""
    orig = getattr(error, "orig", None) or error
    return hide_passwords((str(orig).strip().splitlines() or [type(orig).__name__])[0], url)


def _passwords(url: str) -> list[str]:
    found = {m["password"] for pattern in (_USERINFO, _QUERY) for m in pattern.finditer(url)}
    try:
        found.add(make_url(url).password)  # decoded: p%40ss in the URL is p@ss to the driver
    except (ArgumentError, ValueError):
        pass
    return [p for p in found if p]
