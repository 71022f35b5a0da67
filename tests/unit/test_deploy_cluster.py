"""The cluster variant of the compose stack (docker-compose.cluster.yml over docker-compose.yml), as
`docker-compose config` resolves it: six cache nodes joined once into 3 masters + 3 replicas, and the workers and
beat pointed at the cluster with CACHEWARM_REDIS_CLUSTER=true (no docker engine runs here: the files are checked,
the cluster itself is tested with real redis-server nodes in the cluster tests)."""

from __future__ import annotations

import functools

from tests.unit.test_deploy import compose_service, compose_value, run

FILES = ("-f", "docker-compose.yml", "-f", "docker-compose.cluster.yml")
NODES = ["cache", "cache-2", "cache-3", "cache-4", "cache-5", "cache-6"]


@functools.cache
def config() -> str:
    return run("docker-compose", *FILES, "config")


def test_cluster_compose_is_valid() -> None:
    run("docker-compose", *FILES, "config", "--quiet")
    services = set(run("docker-compose", *FILES, "config", "--services").split())
    assert {*NODES, "cache-init", "broker", "worker", "beat", "source", "prometheus", "grafana"} <= services


def test_every_node_runs_in_cluster_mode() -> None:
    for node in NODES:
        block = compose_service(config(), node)
        command = compose_value(block, "command")
        assert "--cluster-enabled yes" in command and "--cluster-announce-hostname" in command, (node, command)
        assert compose_value(block, "NODE") == node


def test_the_nodes_are_joined_once_with_a_replica_each() -> None:
    command = compose_value(compose_service(config(), "cache-init"), "command")
    assert "--cluster create" in command and "--cluster-replicas 1" in command
    assert all(f"{node}:6379" in command for node in NODES)
    assert "cluster_state:ok" in command  # a restart of the stack does not try to create it again


def test_workers_and_beat_use_the_cluster_and_a_plain_broker() -> None:
    for name in ("worker", "beat"):
        block = compose_service(config(), name)
        assert compose_value(block, "CACHEWARM_REDIS_CLUSTER") == '"true"'
        assert compose_value(block, "CACHEWARM_REDIS_URL") == "redis://cache:6379/0"
        assert compose_value(block, "CACHEWARM_BROKER_URL") == "redis://broker:6379/0"
        assert any(line.strip() == "cache-init:" for line in block), name
