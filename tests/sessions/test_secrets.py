"""Nothing leaked: a store password, given with `--store` to every command that takes one or
kept in a session's policy, never shows in command output, events, log records, the
sessions registry, the Redis keys or the session's files; `resume` takes it back from the
environment. Against a real redis-server started with `--requirepass`, with the tiny
session stand-ins of tests/session_worker.py."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from cli.app import make_app
from storage import open_store
from storage.urls import PASSWORD_ENV, REDIS_URL_ENV
from tests.ci_rules import skip_or_fail_in_ci
from tests.session_support import tiny_policy
from tests.session_worker import stand_in_loaders

pytestmark = pytest.mark.integration

PASSWORD = "Sw33p-s3cret-4f9c"
runner = CliRunner()


@dataclass(frozen=True)
class SecretRedis:
    """A redis-server of this test's own that refuses clients without `PASSWORD`."""

    port: int

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    @property
    def query_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?password={PASSWORD}"

    @property
    def masked(self) -> str:
        return f"redis://:***@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=PASSWORD, socket_connect_timeout=0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def secret_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecretRedis]:
    if shutil.which("redis-server") is None:
        skip_or_fail_in_ci("redis-server is not installed (apt-get install redis-server)")
    folder = tmp_path_factory.mktemp("secret-redis")
    server = SecretRedis(free_port())
    command = ["redis-server", "--port", str(server.port), "--bind", "127.0.0.1"]
    command += ["--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(folder)]
    with (folder / "redis.log").open("ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                server.client().ping()
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, (folder / "redis.log").read_text()
                time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        proc.wait(10)


def redis_values(server: SecretRedis) -> list[str]:
    """Every key and value the server holds: checkpoints, event streams, the registry."""
    client = server.client()
    values: list[str] = []
    for key in client.scan_iter():
        kind = client.type(key).decode()
        content = {
            "string": lambda k: client.get(k),
            "hash": lambda k: client.hgetall(k),
            "list": lambda k: client.lrange(k, 0, -1),
            "set": lambda k: client.smembers(k),
            "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
            "stream": lambda k: client.xrange(k),
        }[kind](key)
        values.append(f"{key!r} {content!r}")
    client.close()
    return values


def files_under(folder: Path) -> list[str]:
    return [
        f"{path}: {path.read_bytes().decode('utf-8', 'replace')}"
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]


def test_no_output_event_log_or_file_shows_the_store_password(
    secret_redis: SecretRedis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in (PASSWORD_ENV, REDIS_URL_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "400")  # no wrapped line hides a URL
    caplog.set_level(logging.DEBUG)
    app = make_app(stand_in_loaders())
    root = tmp_path / "runs"
    policy_file = tmp_path / "policy.yaml"  # the user's own file: it holds the password
    policy = tiny_policy().model_copy(update={"store": secret_redis.url})
    policy_file.write_text(policy.model_dump_json())
    outputs: list[str] = []

    def cli(*args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
        result = runner.invoke(app, [*args, "--root", str(root)], env=env)
        outputs.append(f"{args[0]} printed: {result.output}")  # the output, not the args
        assert result.exit_code == code, result.output
        return result.output

    shown = cli("run", "--policy", str(policy_file), "--session-id", "s")  # store from the policy
    assert f"store {secret_redis.masked}" in shown

    for url, masked in (
        (secret_redis.url, secret_redis.masked),
        (secret_redis.query_url, secret_redis.query_url.replace(PASSWORD, "***")),
    ):
        assert f"sessions in {masked}" in cli("sessions", "--store", url)
        (listed,) = [
            json.loads(line) for line in cli("sessions", "--store", url, "--json").splitlines()
        ]
        assert listed["store_url"] == secret_redis.masked
        assert "finished: cycle budget spent" in cli("trace", "s", "--store", url)
        cli("trace", "s", "--follow", "--json", "--store", url)
        assert f"no session 'nope' in {masked}" in cli("trace", "nope", "--store", url, code=2)
        exists = cli(
            "run", "--policy", str(policy_file), "--session-id", "s", "--store", url, code=2
        )
        assert f"autodidact resume s --store {masked} --root {root}" in exists
        assert f"with {PASSWORD_ENV} set" in exists

    saved = json.loads((root / "sessions" / "s" / "policy.json").read_text())
    assert saved["store"] == secret_redis.masked
    missing = cli("resume", "s", code=2)  # the saved policy's store, no password anywhere
    assert PASSWORD_ENV in missing and REDIS_URL_ENV in missing
    assert len(missing.strip().splitlines()) == 1
    cli("resume", "s", env={PASSWORD_ENV: PASSWORD})
    cli("resume", "s", env={REDIS_URL_ENV: secret_redis.url})
    cli("resume", "s", "--store", secret_redis.masked, env={PASSWORD_ENV: PASSWORD})  # the hint
    cli("resume", "s", "--store", secret_redis.url)  # spelled out, as before

    with open_store(secret_redis.url, root) as store:
        written = [e.model_dump_json() for e in store.events.read("s")]
        written += [info.model_dump_json() for info in store.events.list_sessions()]
    written += redis_values(secret_redis)
    written += [record.getMessage() for record in caplog.records]
    written += files_under(root)
    assert len(written) > 50, "the sweep saw the session's events, keys and files"
    leaks = [text for text in outputs + written if PASSWORD in "".join(text.split())]
    assert not leaks, leaks[:3]
