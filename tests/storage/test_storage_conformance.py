"""Every checkpointer `open_checkpointer` yields passes LangGraph's conformance suite.

The suite drives the async API; our savers are the sync ones the graph uses
(`graph.stream`), so `SyncAsAsync` forwards each async call to the sync method under test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES

from storage import open_checkpointer


class SyncAsAsync(BaseCheckpointSaver):
    """The async checkpointer API over a sync saver, for the conformance suite."""

    def __init__(self, inner: BaseCheckpointSaver) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.inner.get_tuple(config)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.inner.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.inner.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.inner.delete_thread(thread_id)

    async def alist(  # type: ignore[override]
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in self.inner.list(config, filter=filter, before=before, limit=limit):
            yield item

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.inner.get_next_version(current, channel)


def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "redis":
        return str(request.getfixturevalue("redis_url"))
    if backend == "sqlite-memory":
        return "sqlite:///:memory:"
    return f"sqlite:///{tmp_path}/nested/checkpoints.db"


BACKENDS = ["sqlite-file", "sqlite-memory", pytest.param("redis", marks=pytest.mark.integration)]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_checkpointer_passes_langgraph_conformance(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = store_url(backend, tmp_path, request)

    @checkpointer_test(name=f"open_checkpointer({backend})")
    async def factory() -> AsyncIterator[BaseCheckpointSaver]:
        with open_checkpointer(url) as saver:
            yield SyncAsAsync(saver)

    report = await validate(factory)

    failures = {cap: r.failures for cap, r in report.results.items() if r.failures}
    assert report.passed_all_base(), failures
    assert all(report.results[cap.value].tests_passed > 0 for cap in BASE_CAPABILITIES)


def test_adapter_exposes_only_what_the_sync_saver_has() -> None:
    """Extended capabilities (copy_thread, prune, ...) stay undetected, not faked."""
    from langgraph.checkpoint.conformance.capabilities import DetectedCapabilities

    with open_checkpointer("sqlite:///:memory:") as saver:
        detected = DetectedCapabilities.from_instance(SyncAsAsync(saver)).detected
    assert detected == BASE_CAPABILITIES
