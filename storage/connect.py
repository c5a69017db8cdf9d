"""Opening connections: SQLite files and Redis clients, with one-line errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from storage.errors import StoreError
from storage.urls import mask_password

CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 10.0  # above events.MAX_BLOCK_MS, so XREAD BLOCK never times out
REDIS_FIX = (
    "start redis-server (a session kept in this Redis resumes only from it; a new one can "
    "use --store sqlite:///path/to/autodidact.db)"
)


def connect_sqlite(path: str | Path) -> sqlite3.Connection:
    """A connection usable from any thread (callers lock), parent folders created.

    WAL with synchronous=NORMAL: a killed process loses no committed write; only a
    power cut or OS crash may drop the last commits (the database stays consistent)."""
    memory = str(path) == ":memory:"
    try:
        if not memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30.0)
        if not memory:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
    except (sqlite3.Error, OSError) as error:
        raise StoreError(
            f"cannot open SQLite database {path} ({error}): pass a writable --store sqlite:///..."
        ) from None
    return conn


def redis_failure(url: str, error: Exception) -> StoreError:
    """One line naming the (masked) URL, the reason and the fix."""
    shown = mask_password(url)
    if isinstance(error, redis.AuthenticationError) or "NOAUTH" in str(error):
        return StoreError(
            f"Redis at {shown} refused the credentials: fix the user/password in the URL"
        )
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
    password = urlsplit(url).password
    if password:
        reason = reason.replace(password, "***")
    return StoreError(f"cannot reach Redis at {shown} ({reason}): {REDIS_FIX}")


def redis_client(url: str, timeout_s: float, retries: int) -> redis.Redis:
    """A client for `url` (RESP2, bytes replies); `StoreError` when the URL is malformed."""
    try:
        return redis.Redis.from_url(
            url,
            protocol=2,
            socket_connect_timeout=timeout_s,
            socket_timeout=max(timeout_s, SOCKET_TIMEOUT_S) if retries else timeout_s,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
        )
    except ValueError as error:
        raise StoreError(
            f"bad Redis URL {mask_password(url)!r} ({error}): use redis://[:password@]host:port/db"
        ) from None


def connect_redis(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> redis.Redis:
    """A client for `url`, after a PING that must answer within `timeout_s` (no retries);
    `StoreError` naming the URL and the fix when it does not."""
    probe = redis_client(url, timeout_s, retries=0)
    try:
        probe.ping()
    except (redis.RedisError, OSError) as error:
        raise redis_failure(url, error) from None
    finally:
        probe.close()
    return redis_client(url, timeout_s, retries=3)


def persistence_problem(config: dict[str, str], url: str) -> str | None:
    """A warning when the Redis server keeps nothing on disk (`appendonly no` and an empty
    `save`): a Redis restart would lose every checkpoint and event. `config`: the server's
    `CONFIG GET appendonly` and `CONFIG GET save` answers.

    >>> persistence_problem({"appendonly": "no", "save": ""}, "redis://h:6379/0")[:45]
    'redis://h:6379/0 keeps nothing on disk (appen'
    >>> persistence_problem({"appendonly": "yes", "save": ""}, "redis://h:6379/0") is None
    True
    """
    if config.get("appendonly", "no") == "yes" or config.get("save", "").strip():
        return None
    return (
        f'{mask_password(url)} keeps nothing on disk (appendonly no, save ""): a Redis '
        "restart loses this session's checkpoints and events; turn persistence on with "
        "`CONFIG SET appendonly yes` (and `appendonly yes` in redis.conf)"
    )


def redis_persistence_problem(client: redis.Redis, url: str) -> str | None:
    """`persistence_problem` of the server behind `client`; None when the server does not
    let us read its configuration (CONFIG renamed or forbidden)."""
    try:
        config = {**client.config_get("appendonly"), **client.config_get("save")}
    except redis.RedisError:
        return None
    return persistence_problem({str(k): str(v) for k, v in config.items()}, url)
