"""One folder per session holding its artifacts, listed with their content hashes in
`manifest.json`. Every write lands atomically (a temp file or folder beside the target,
then `os.replace`); `verify(name)` re-hashes before an artifact is used again; what a
write cut short by a kill left behind goes with `remove_partial_writes()`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, Field

from storage.errors import ArtifactError, ArtifactIntegrityError
from storage.records import json_default

__all__ = ["Artifact", "ArtifactError", "ArtifactIntegrityError", "ArtifactStore", "Manifest"]

MANIFEST = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
CHUNK = 1 << 20
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
# `.NAME.RANDOM.tmp` and `.NAME.RANDOM.old` (here), `.NAME.tmp-PID` (probes), `.vN.tmp` and
# `.vN.work` (agents.optimize): every writer of a session folder writes a dot-named temp
# beside its target and renames it into place
PARTIAL_WRITE = re.compile(r"^\..+\.(tmp|old|work|tmp-\d+)$")


class Artifact(BaseModel):
    """One manifest entry."""

    name: str = Field(description="Name inside the session folder, a relative POSIX path.")
    kind: str = Field(description="What it is: json, jsonl, bytes, model, probe, ...")
    path: str = Field(description="Path relative to the session folder.")
    sha256: str = Field(
        description="Hex SHA-256 of the file, or of a folder's tree (see tree_sha256)."
    )
    bytes: int = Field(ge=0, description="Size in bytes (a folder: sum of its files).")
    created_at: float = Field(description="Unix time it was written.")


class Manifest(BaseModel):
    """`manifest.json`: every artifact of one session, by name."""

    schema_version: int = Field(
        default=MANIFEST_SCHEMA_VERSION, description="Version of this file's layout."
    )
    artifacts: list[Artifact] = Field(
        default_factory=list, description="Artifacts, in write order."
    )

    def find(self, name: str) -> Artifact | None:
        """The entry called `name`, if any."""
        return next((a for a in self.artifacts if a.name == name), None)

    def with_artifact(self, artifact: Artifact) -> Manifest:
        """A copy with `artifact` added, replacing any entry of the same name."""
        kept = [a for a in self.artifacts if a.name != artifact.name]
        return Manifest(schema_version=self.schema_version, artifacts=[*kept, artifact])


def check_name(name: str) -> str:
    """`name` if it is a safe relative path inside the session folder, else ValueError.

    >>> check_name("cycle-1/sft.jsonl")
    'cycle-1/sft.jsonl'
    >>> check_name("../escape.json")
    Traceback (most recent call last):
    ValueError: artifact name '../escape.json' must be a relative path without '..'
    """
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or ".." in parts or "\\" in name:
        raise ValueError(f"artifact name {name!r} must be a relative path without '..'")
    if name == MANIFEST:
        raise ValueError(f"artifact name {name!r} is reserved for the manifest")
    return name


def file_sha256(path: Path) -> tuple[str, int]:
    """(hex SHA-256, size) of one file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def tree_files(root: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every file under `root`, sorted by relative path."""
    files = [(p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file()]
    return sorted(files)


def tree_sha256(root: Path) -> tuple[str, int]:
    """(hex SHA-256, total size) of a folder: each file's relative path, size and bytes,
    in sorted path order; a renamed, edited, added or removed file changes it."""
    digest, total = hashlib.sha256(), 0
    for rel, path in tree_files(root):
        file_hash, size = file_sha256(path)
        digest.update(f"{rel}\0{size}\0{file_hash}\n".encode())
        total += size
    return digest.hexdigest(), total


def content_sha256(path: Path) -> tuple[str, int]:
    """Hash and size of a file or a folder."""
    return tree_sha256(path) if path.is_dir() else file_sha256(path)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `target`, fsync, then rename it over `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy_dir(src: Path, target: Path) -> None:
    """Copy `src` to a temp folder beside `target`, then swap it in (old copy removed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    old = tmp.with_suffix(".old")
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def is_partial_write(name: str) -> bool:
    """Whether a file or folder called `name` is the temp of a write that never finished.

    >>> names = [".sft.jsonl.k2x9.tmp", ".weights.safetensors.tmp-812", ".v1.work", ".v1.tmp"]
    >>> [is_partial_write(name) for name in names]
    [True, True, True, True]
    >>> [is_partial_write(name) for name in ["sft.jsonl", "v1.tmp", ".hidden", ".tmp"]]
    [False, False, False, False]
    """
    return PARTIAL_WRITE.match(name) is not None


def _folder_lock(root: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(root, threading.Lock())


class ArtifactStore:
    """The artifacts of one session, in `root` (the session's folder)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()
        self._lock = _folder_lock(self.root)

    # ------------------------------------------------------------------ manifest

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> Manifest:
        """The manifest on disk (empty when nothing was written yet)."""
        if not self.manifest_path.exists():
            return Manifest()
        return Manifest.model_validate_json(self.manifest_path.read_bytes())

    def entries(self) -> list[Artifact]:
        """Every artifact, in write order."""
        return list(self.manifest().artifacts)

    def get(self, name: str) -> Artifact:
        """The manifest entry of `name`; `ArtifactError` when there is none."""
        found = self.manifest().find(name)
        if found is None:
            raise ArtifactError(
                f"no artifact {name!r} in {self.manifest_path}: write it first "
                f"(known: {', '.join(a.name for a in self.entries()) or 'none'})"
            )
        return found

    @contextmanager
    def _recording(self, name: str, kind: str) -> Iterator[Path]:
        """Yield the target path; after the caller wrote it, hash it into the manifest."""
        target = self.root / check_name(name)
        with self._lock:
            yield target
            sha, size = content_sha256(target)
            entry = Artifact(
                name=name, kind=kind, path=name, sha256=sha, bytes=size, created_at=time.time()
            )
            manifest = self.manifest().with_artifact(entry)
            atomic_write_bytes(self.manifest_path, manifest.model_dump_json(indent=2).encode())

    # ------------------------------------------------------------------ writing

    def remove_partial_writes(self) -> list[str]:
        """Remove the temp files and folders of writes a killed process never finished
        (see `is_partial_write`); their names, relative to the folder. For the folder's one
        writer, before it writes again: run from a reader while a write is under way, it
        would pull the temp file from under that write."""
        if not self.root.is_dir():
            return []
        found = sorted(
            (p for p in self.root.rglob(".*") if is_partial_write(p.name)),
            key=lambda p: len(p.parts),  # outer first: what lies inside goes with it
        )
        removed = []
        with self._lock:
            for path in found:
                if not os.path.lexists(path):
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path.relative_to(self.root).as_posix())
        return removed

    def write_bytes(self, name: str, data: bytes, kind: str = "bytes") -> Artifact:
        """Write `data` as artifact `name`."""
        with self._recording(name, kind) as target:
            atomic_write_bytes(target, data)
        return self.get(name)

    def write_json(self, name: str, obj: Any, kind: str = "json") -> Artifact:
        """Write `obj` as pretty-printed JSON."""
        text = json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n"
        return self.write_bytes(name, text.encode(), kind)

    def write_jsonl(self, name: str, rows: Iterable[Any], kind: str = "jsonl") -> Artifact:
        """Write `rows` as JSON lines."""
        lines = [json.dumps(row, default=json_default) + "\n" for row in rows]
        return self.write_bytes(name, "".join(lines).encode(), kind)

    def add_dir(self, name: str, src_dir: Path | str, kind: str) -> Artifact:
        """Record a folder (e.g. a model version) as artifact `name`. A folder already at
        `root/name` is hashed in place; any other is copied there atomically first."""
        src = Path(src_dir).absolute()
        if not src.is_dir():
            raise ArtifactError(f"cannot add {name!r}: {src} is not a folder")
        with self._recording(name, kind) as target:
            if src.resolve() != target.resolve():
                atomic_copy_dir(src, target)
        return self.get(name)

    # ------------------------------------------------------------------ reading

    def path(self, name: str) -> Path:
        """Where artifact `name` lies (not re-hashed: use `verify` before trusting it)."""
        return self.root / self.get(name).path

    def verify(self, name: str) -> Path:
        """The path of `name` after checking its hash; `ArtifactIntegrityError` if it changed."""
        entry = self.get(name)
        path = self.root / entry.path
        found = content_sha256(path)[0] if path.exists() else "missing"
        if found != entry.sha256:
            raise ArtifactIntegrityError(
                f"artifact {name!r} in {self.root} does not match the manifest: "
                f"expected sha256 {entry.sha256[:16]}, found {found[:16]}; "
                "re-run the step that wrote it (or restore the file), nothing uses it until then"
            )
        return path
