"""ArtifactStore: atomic writes, the manifest, and tamper detection."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from storage import ArtifactError, ArtifactIntegrityError, ArtifactStore
from storage.artifacts import tree_sha256


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".old"))]


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "sessions" / "s1")


def test_writes_land_in_the_manifest_with_their_hash(store: ArtifactStore) -> None:
    store.write_json("policy.json", {"b": 1, "a": [1, 2]})
    store.write_jsonl("cycle-1/sft.jsonl", [{"q": "2+2", "a": "4"}, {"q": "1+1", "a": "2"}])
    store.write_bytes("notes.bin", b"\x00\x01", kind="blob")

    manifest = json.loads((store.root / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    entries = {a["name"]: a for a in manifest["artifacts"]}
    assert list(entries) == ["policy.json", "cycle-1/sft.jsonl", "notes.bin"]
    for entry in entries.values():
        path = store.root / entry["path"]
        assert entry["sha256"] == sha256(path)
        assert entry["bytes"] == path.stat().st_size
        assert entry["created_at"] > 0
    assert entries["notes.bin"]["kind"] == "blob"
    assert json.loads(store.verify("policy.json").read_text()) == {"a": [1, 2], "b": 1}
    rows = store.verify("cycle-1/sft.jsonl").read_text().splitlines()
    assert [json.loads(r)["a"] for r in rows] == ["4", "2"]
    assert not leftovers(store.root)


def test_rewriting_a_name_replaces_its_entry(store: ArtifactStore) -> None:
    store.write_json("report.json", {"v": 1})
    entry = store.write_json("report.json", {"v": 2})
    assert [a.name for a in store.entries()] == ["report.json"]
    assert entry.sha256 == sha256(store.verify("report.json"))


def test_a_failed_write_leaves_the_old_file_and_manifest(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write_json("state.json", {"v": 1})
    before = (store.root / "manifest.json").read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.write_json("state.json", {"v": 2})
    monkeypatch.undo()

    assert json.loads(store.verify("state.json").read_text()) == {"v": 1}
    assert (store.root / "manifest.json").read_bytes() == before
    assert not leftovers(store.root)


def test_tampered_file_is_never_silently_used(store: ArtifactStore) -> None:
    entry = store.write_jsonl("cycle-1/pairs.jsonl", [{"chosen": "a", "rejected": "b"}])
    path = store.path("cycle-1/pairs.jsonl")
    path.write_text('{"chosen": "b", "rejected": "a"}\n')

    with pytest.raises(ArtifactIntegrityError) as caught:
        store.verify("cycle-1/pairs.jsonl")
    message = str(caught.value)
    assert "\n" not in message
    assert "cycle-1/pairs.jsonl" in message
    assert entry.sha256[:16] in message and sha256(path)[:16] in message
    assert "re-run" in message


def test_missing_file_is_an_integrity_error(store: ArtifactStore) -> None:
    store.write_bytes("weights.bin", b"123")
    store.path("weights.bin").unlink()
    with pytest.raises(ArtifactIntegrityError, match="found missing"):
        store.verify("weights.bin")


def test_unknown_and_unsafe_names(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactError, match=r"no artifact 'nope\.json'"):
        store.verify("nope.json")
    for bad in ("../escape.json", "/abs.json", "a/../../b", "manifest.json", ""):
        with pytest.raises(ValueError):
            store.write_bytes(bad, b"x")


def make_model_dir(folder: Path) -> Path:
    (folder / "merged").mkdir(parents=True)
    (folder / "merged" / "model.safetensors").write_bytes(b"\x01" * 1000)
    (folder / "merged" / "config.json").write_text('{"hidden_size": 16}')
    (folder / "train.json").write_text("{}")
    return folder


def test_add_dir_copies_atomically_and_detects_tampering(
    store: ArtifactStore, tmp_path: Path
) -> None:
    src = make_model_dir(tmp_path / "outside" / "v1")
    entry = store.add_dir("versions/v1", src, kind="model")

    copied = store.verify("versions/v1")
    assert copied == store.root / "versions" / "v1"
    assert (copied / "merged" / "config.json").read_text() == '{"hidden_size": 16}'
    assert (entry.kind, entry.bytes) == ("model", 1000 + 19 + 2)
    assert entry.sha256 == tree_sha256(src)[0]
    (src / "train.json").write_text('{"changed": true}')  # the source is not the artifact
    store.verify("versions/v1")

    (copied / "merged" / "extra.bin").write_bytes(b"")
    with pytest.raises(ArtifactIntegrityError, match="versions/v1"):
        store.verify("versions/v1")
    assert not leftovers(store.root)


def test_add_dir_of_a_folder_already_in_place_hashes_it_there(store: ArtifactStore) -> None:
    folder = make_model_dir(store.root / "probes" / "probe-0")
    entry = store.add_dir("probes/probe-0", folder, kind="probe")
    assert store.verify("probes/probe-0") == folder
    assert entry.sha256 == tree_sha256(folder)[0]

    (folder / "merged" / "model.safetensors").write_bytes(b"\x02" * 1000)
    with pytest.raises(ArtifactIntegrityError):
        store.verify("probes/probe-0")


def test_re_adding_a_dir_replaces_the_old_copy(store: ArtifactStore, tmp_path: Path) -> None:
    first = make_model_dir(tmp_path / "a")
    second = tmp_path / "b"
    second.mkdir()
    (second / "only.txt").write_text("new")
    store.add_dir("versions/v1", first, kind="model")
    store.add_dir("versions/v1", second, kind="model")
    folder = store.verify("versions/v1")
    assert sorted(p.name for p in folder.iterdir()) == ["only.txt"]


def test_tree_hash_covers_names_and_bytes(tmp_path: Path) -> None:
    one, two = make_model_dir(tmp_path / "one"), make_model_dir(tmp_path / "two")
    assert tree_sha256(one) == tree_sha256(two)
    (two / "train.json").rename(two / "renamed.json")
    assert tree_sha256(one)[0] != tree_sha256(two)[0]


def test_two_stores_on_one_folder_keep_every_entry(tmp_path: Path) -> None:
    stores = [ArtifactStore(tmp_path / "s"), ArtifactStore(tmp_path / "s")]

    def write(n: int) -> None:
        for i in range(20):
            stores[n % 2].write_json(f"t{n}/{i}.json", {"i": i})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ArtifactStore(tmp_path / "s").entries()) == 80


def test_the_temps_of_writes_a_kill_cut_short_are_removed_and_nothing_else(
    store: ArtifactStore,
) -> None:
    """What a process SIGKILLed mid-write leaves: a temp file beside its target (here, and
    the probes' `.NAME.tmp-PID`), a half-copied folder, a version's temp and training
    folders. The next writer of the session removes them; artifacts and other files stay."""
    store.write_jsonl("cycle-1/sft.jsonl", [{"q": "1+1", "a": "2"}])
    (store.root / "cycle-1" / ".sft.jsonl.k2x9.tmp").write_text("half")
    (store.root / "probes" / "p").mkdir(parents=True)
    (store.root / "probes" / "p" / ".weights.safetensors.tmp-812").write_bytes(b"half")
    (store.root / "versions" / ".v1.tmp" / "merged").mkdir(parents=True)
    (store.root / "versions" / ".v1.tmp" / "merged" / "model.safetensors").write_bytes(b"h")
    (store.root / "versions" / ".v1.work").mkdir()
    (store.root / "versions" / "v0.tmp").write_text("a user's file, not a temp")
    (store.root / ".notes").write_text("not a temp either")

    removed = store.remove_partial_writes()

    assert sorted(removed) == [
        "cycle-1/.sft.jsonl.k2x9.tmp",
        "probes/p/.weights.safetensors.tmp-812",
        "versions/.v1.tmp",
        "versions/.v1.work",
    ]
    kept = sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*"))
    assert kept == [
        ".notes",
        "cycle-1",
        "cycle-1/sft.jsonl",
        "manifest.json",
        "probes",
        "probes/p",
        "versions",
        "versions/v0.tmp",
    ]
    store.verify("cycle-1/sft.jsonl")
    assert store.remove_partial_writes() == []
    assert ArtifactStore(store.root / "never-written").remove_partial_writes() == []
