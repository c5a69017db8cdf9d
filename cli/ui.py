"""`autodidact ui`: MLflow's own server and UI on the project's tracking store (the
sessions tracked under `--root`), bound to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from cli.common import DEFAULT_ROOT, RootOption, cli_command, console, fail

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0


def port_in_use(host: str, port: int) -> bool:
    """Whether `port` on `host` is taken (by a server already listening there)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def server_command(root: Path, host: str, port: int) -> list[str]:
    """`mlflow server` on the SQLite store under `root`, one worker.

    >>> server_command(Path("/r"), "127.0.0.1", 5000)[4:8]
    ['--backend-store-uri', 'sqlite:////r/mlflow.db', '--default-artifact-root', '/r/mlartifacts']
    """
    from storage.mlflow_store import default_artifact_root, default_tracking_uri

    return [
        sys.executable,
        *("-m", "mlflow", "server"),
        *("--backend-store-uri", default_tracking_uri(root)),
        *("--default-artifact-root", str(default_artifact_root(root))),
        *("--host", host, "--port", str(port), "--workers", "1"),
    ]


def server_env(environ: dict[str, str]) -> dict[str, str]:
    """The server's environment: no background job runner, telemetry off (unless the
    user set either).

    >>> server_env({})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]
    'false'
    """
    return {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **environ,
    }


def wait_until_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    """Poll the server's health endpoint until it answers; a server that exits first is
    an error."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise fail(f"mlflow server exited with code {server.returncode}: see its lines above")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    stop(server)
    raise fail(f"mlflow server did not answer on {url} within {READY_TIMEOUT_S:.0f} s")


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server and its workers (its own process group): SIGTERM, then SIGKILL."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def raise_keyboard_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def ui(
    port: Annotated[int, typer.Option("--port", "-p", help="Port to serve on.")] = 5000,
    root: RootOption = DEFAULT_ROOT,
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Interface to bind (0.0.0.0 serves every network: anyone can read)."
        ),
    ] = "127.0.0.1",
) -> None:
    """Show the sessions tracked under --root in the browser (MLflow's UI): each session
    a run with per-cycle metric charts, every decision and why, samples tables (selected
    for training or not), one trace per cycle. Prints the URL; Ctrl-C stops it."""
    from storage.mlflow_store import INSTALL_HINT, tracking_available

    if not tracking_available():
        raise fail(f"`autodidact ui` needs MLflow, which is not installed: {INSTALL_HINT}")
    store = root / "mlflow.db"
    if not store.is_file():
        raise fail(
            f"no tracked sessions under {root} (no {store}): run a session first, or pass "
            "the --root it ran with"
        )
    if port_in_use(host, port):
        raise fail(f"port {port} on {host} is in use: pass another --port")
    for ending in (signal.SIGINT, signal.SIGTERM):  # either stops the server with us
        signal.signal(ending, raise_keyboard_interrupt)
    server = subprocess.Popen(  # its log on stderr: stdout holds the URL line alone
        server_command(root, host, port),
        env=server_env(dict(os.environ)),
        stdout=sys.stderr,
        start_new_session=True,
    )
    url = f"http://{host}:{port}"
    try:
        wait_until_ready(url, server)
        console.print(f"MLflow UI: {url} (Ctrl-C stops it)", highlight=False, soft_wrap=True)
        sys.stdout.flush()
        server.wait()
    except KeyboardInterrupt:
        stop(server)
        console.print("stopped")
        return
    finally:
        stop(server)
    raise fail(f"mlflow server exited with code {server.returncode}: see its lines above")


def register(app: typer.Typer) -> None:
    app.command("ui")(cli_command(ui))
