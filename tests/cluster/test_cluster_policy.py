"""The `cluster` policy section and its checks, and the local backend's promise: a session
of `cluster.backend: local` never imports Ray. No Ray needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from graph.policy import PolicyError, resolve_policy


def test_defaults_are_local_and_keys_resolve_from_set() -> None:
    policy = resolve_policy(
        None,
        None,
        [
            "cluster.backend=ray",
            "cluster.address=auto",
            "cluster.worker_resources.CPU=2",
            "cluster.train_workers=4",
            "optimize.batch_size=16",
            "cluster.storage=/mnt/shared",
        ],
    )
    assert resolve_policy().cluster.backend == "local"
    cluster = policy.cluster
    assert (cluster.backend, cluster.address, cluster.storage) == ("ray", "auto", "/mnt/shared")
    assert (cluster.worker_resources.CPU, cluster.train_workers) == (2.0, 4)
    assert cluster.torch_backend() == "gloo"


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (
            ["cluster.backend=ray", "optimize.batch_size=5"],
            "split evenly over cluster.train_workers",
        ),
        (["cluster.backend=ray", "engine=vllm"], "set engine=transformers"),
        (["cluster.train_backend=nccl"], "needs GPUs"),
        (["cluster.backend=spark"], "cluster.backend"),
    ],
)
def test_bad_cluster_settings_name_the_fix(sets: list[str], says: str) -> None:
    with pytest.raises(PolicyError, match=says):
        resolve_policy(None, None, sets)


def test_the_local_backend_never_imports_ray() -> None:
    code = (
        "import sys; import cli.app, graph.build, graph.nodes, graph.session, engines.cluster; "
        "from engines.loading import backend_problem; backend_problem('ray'); "
        "print('ray' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.stdout.strip() == "False", found.stderr
