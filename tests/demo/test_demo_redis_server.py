"""The private redis-server's port choice (cachewarm.demo.redis_server): the tests and benchmarks start their
servers on these ports."""

from __future__ import annotations

import socket

import pytest
import redis

from cachewarm.demo import redis_server
from cachewarm.demo.redis_server import RedisServer, free_port


def test_free_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    # A port from the ephemeral range can be taken by any outgoing connection's local end before the server binds
    # it (a CI run lost a cluster node that way).
    low = redis_server.ephemeral_start()
    ports = {free_port() for _ in range(50)}
    assert all(port < low for port in ports)
    assert len(ports) > 40  # random, not one port handed out again and again
    for port in list(ports)[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy, busy])  # then the real draws (a fixed next port may be taken by another suite's socket)
        draw = redis_server._random.randrange
        monkeypatch.setattr(redis_server._random, "randrange", lambda *args: next(picks, None) or draw(*args))
        assert free_port() != busy


def test_a_server_starts_on_a_free_port() -> None:
    with RedisServer() as server:
        assert server.port < redis_server.ephemeral_start()
        assert redis.Redis(port=server.port).ping()
