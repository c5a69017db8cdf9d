"""Store URLs: parse `sqlite:///...` and `redis://...`, mask passwords for messages.

Pure string logic, no I/O."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from storage.errors import StoreError

Backend = Literal["sqlite", "redis"]
SQLITE_PREFIX = "sqlite:///"
MEMORY = ":memory:"
SUPPORTED = (
    "sqlite:///path/to/autodidact.db, sqlite:///:memory: or redis://[:password@]host:port/db"
)


def mask_password(url: str) -> str:
    """The URL with any password replaced by `***`, safe to print or record.

    >>> mask_password("redis://:s3cret@db.local:6379/0")
    'redis://:***@db.local:6379/0'
    >>> mask_password("redis://alice:s3cret@db.local/1")
    'redis://alice:***@db.local/1'
    >>> mask_password("sqlite:///runs/autodidact.db")
    'sqlite:///runs/autodidact.db'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, _password = userinfo.partition(":")
    netloc = f"{user}{sep}***@{hostport}" if sep else f"{userinfo}@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


def backend_of(url: str) -> Backend:
    """Which backend a store URL names; `StoreError` for anything else.

    >>> backend_of("sqlite:///:memory:"), backend_of("rediss://cache:6380/2")
    ('sqlite', 'redis')
    """
    if url.startswith(SQLITE_PREFIX):
        return "sqlite"
    if url.startswith(("redis://", "rediss://", "unix://")):
        return "redis"
    raise StoreError(f"unsupported store URL {mask_password(url)!r}: use {SUPPORTED}")


def sqlite_path(url: str) -> str:
    """The database path in a `sqlite:///` URL (`:memory:` kept as is).

    Three slashes then the path: `sqlite:///runs/a.db` is relative,
    `sqlite:////abs/a.db` is absolute.

    >>> sqlite_path("sqlite:///runs/a.db"), sqlite_path("sqlite:////tmp/a.db")
    ('runs/a.db', '/tmp/a.db')
    >>> sqlite_path("sqlite:///:memory:")
    ':memory:'
    """
    if backend_of(url) != "sqlite":
        raise StoreError(f"not a SQLite URL: {mask_password(url)!r}; use sqlite:///path/to/file.db")
    path = url[len(SQLITE_PREFIX) :]
    if not path:
        raise StoreError(f"SQLite URL {url!r} names no file: use sqlite:///path/to/file.db")
    return path
