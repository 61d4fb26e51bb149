"""Ray fixtures: one real multi-node Ray cluster (``ray.cluster_utils.Cluster``) per test session.

Everything stays on 127.0.0.1, token auth is set explicitly, and Ray's temp files live in a private dir.
Tests that add or remove nodes remove what they added before they end.
"""

from __future__ import annotations

import os
import socket
import tempfile

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keeps Ray on 127.0.0.1 (measured)
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="germ-ray-"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """A head node (no CPUs for workers: the driver and pool live in the test process) plus one
    worker node with 2 logical CPUs. Yields the Cluster; ``ray`` is connected to it."""
    import ray
    from ray.cluster_utils import Cluster

    dashboard_port, agent_port = _free_port(), _free_port()
    cluster = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={
            "num_cpus": 0,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": True,  # the Job Submission API the CLI uses
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard_port,
            "dashboard_agent_listen_port": agent_port,  # not the default 52365: another Ray may hold it
        },
    )
    cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes(timeout=60)
    cluster.dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    yield cluster
    ray.shutdown()
    cluster.shutdown()
