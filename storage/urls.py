"""Store URLs: parse `sqlite:///...` and `redis://...`, mask passwords for messages and
records, and put a masked password back from the environment.

Pure string logic, no I/O: callers pass the environment in."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal
from urllib.parse import quote, unquote, unquote_plus, urlsplit

from storage.errors import StoreError

Backend = Literal["sqlite", "redis"]
SQLITE_PREFIX = "sqlite:///"
SUPPORTED = (
    "sqlite:///path/to/autodidact.db, sqlite:///:memory: or redis://[:password@]host:port/db"
)


MASK = "***"
PASSWORD_ENV = "AUTODIDACT_REDIS_PASSWORD"
REDIS_URL_ENV = "REDIS_URL"
SAFE = "*"  # kept unquoted in a password, so a masked one reads `***`


def mask_password(url: str) -> str:
    """The URL with any password (in `user:password@` or a `password=` query parameter)
    replaced by `***`, safe to print or record.

    >>> mask_password("redis://:s3cret@db.local:6379/0")
    'redis://:***@db.local:6379/0'
    >>> mask_password("redis://alice:s3cret@db.local/1")
    'redis://alice:***@db.local/1'
    >>> mask_password("redis://db.local/0?password=s3cret&ssl_cert_reqs=none")
    'redis://db.local/0?password=***&ssl_cert_reqs=none'
    >>> mask_password("unix:///run/redis.sock?db=1&password=s3cret")
    'unix:///run/redis.sock?db=1&password=***'
    >>> mask_password("sqlite:///runs/autodidact.db")
    'sqlite:///runs/autodidact.db'
    """
    try:
        return _with_passwords(url, lambda _old: MASK)
    except ValueError:
        return "<unparsable URL>"


def has_masked_password(url: str) -> bool:
    """Whether `url` carries `***` (as `mask_password` leaves it) in place of a password.

    >>> has_masked_password("redis://:***@db.local/0"), has_masked_password("redis://db.local/0")
    (True, False)
    >>> has_masked_password("redis://db.local/0?password=***")
    True
    """
    try:
        return MASK in _passwords(url)
    except ValueError:
        return False


def restore_password(url: str, environ: Mapping[str, str]) -> str:
    """`url` with its `***` password filled in from the environment: `AUTODIDACT_REDIS_PASSWORD`,
    else the password of `REDIS_URL` when that names the same host and port. A URL without
    `***` comes back as it is; `StoreError` with the fix when no password is found.

    >>> restore_password("redis://:***@db.local:6379/0", {PASSWORD_ENV: "s3/cret"})
    'redis://:s3%2Fcret@db.local:6379/0'
    >>> restore_password("redis://db.local/0?password=***", {REDIS_URL_ENV: "redis://:pw@db.local:6379/2"})
    'redis://db.local/0?password=pw'
    >>> restore_password("redis://:pw@db.local/0", {}), restore_password("sqlite:///a.db", {})
    ('redis://:pw@db.local/0', 'sqlite:///a.db')
    >>> restore_password("redis://:***@db.local/0", {REDIS_URL_ENV: "redis://:pw@elsewhere/0"})
    Traceback (most recent call last):
    storage.errors.StoreError: the password of redis://:***@db.local/0 is not saved: set AUTODIDACT_REDIS_PASSWORD to it (or REDIS_URL to the store's full URL), or pass --store with the password
    """
    if not has_masked_password(url):
        return url
    password = environ.get(PASSWORD_ENV) or _password_for(url, environ.get(REDIS_URL_ENV, ""))
    if not password:
        raise StoreError(
            f"the password of {url} is not saved: set {PASSWORD_ENV} to it (or "
            f"{REDIS_URL_ENV} to the store's full URL), or pass --store with the password"
        )
    return _with_passwords(url, lambda old: password if old == MASK else None)


def _passwords(url: str) -> list[str]:
    """The passwords in `url`, decoded as redis-py decodes them."""
    found: list[str] = []

    def collect(old: str) -> None:
        found.append(old)

    _with_passwords(url, collect)
    return found


def _with_passwords(url: str, replace: Callable[[str], str | None]) -> str:
    """`url` with each password `p` (in the user info, or a `password=` query parameter)
    replaced by `replace(p)`, quoted; kept as written where that returns None."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if at and colon and (new := replace(unquote(password))) is not None:
        netloc = f"{user}:{quote(new, safe=SAFE)}@{hostport}"
    pairs = []
    for pair in parts.query.split("&") if parts.query else []:
        key, equals, value = pair.partition("=")
        if equals and unquote_plus(key) == "password":
            new = replace(unquote_plus(value))
            pair = pair if new is None else f"{key}={quote(new, safe=SAFE)}"
        pairs.append(pair)
    query = "&".join(pairs)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # by hand: urlunsplit drops the `//` of an empty host (`unix:///run/redis.sock`)
    rebuilt = f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    return rebuilt + (f"#{parts.fragment}" if parts.fragment else "")


def _password_for(url: str, other: str) -> str | None:
    """The password in the URL `other` when it names the same host and port as `url`.

    >>> _password_for("redis://:***@db.local/0", "redis://:pw@db.local:6379/3")
    'pw'
    >>> _password_for("redis://:***@db.local:6380/0", "redis://:pw@db.local:6379/0") is None
    True
    """
    try:
        mine, theirs = urlsplit(url), urlsplit(other)
        if (mine.hostname, mine.port or 6379) != (theirs.hostname, theirs.port or 6379):
            return None
        passwords = [p for p in _passwords(other) if p and p != MASK]
    except ValueError:
        return None
    return passwords[0] if passwords else None


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
