"""The TCP fault proxy, with redis-py talking to a real redis-server through it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cachewarm.demo.redis_server import RedisServer
from tests.support.fault_proxy import FaultProxy


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", redis_server.port) as fault_proxy:
        yield fault_proxy


def connect(proxy: FaultProxy, timeout: float = 5.0) -> redis.Redis:
    """A client through the proxy that fails at once instead of retrying, so faults show up fast."""
    return redis.Redis(host=proxy.host, port=proxy.port, socket_timeout=timeout,
                       socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))


def test_pass_mode_carries_redis_traffic(proxy: FaultProxy) -> None:
    big = b"x" * 2_000_000
    with connect(proxy) as client:
        assert client.ping()
        client.set("fault-proxy:big", big)
        assert client.get("fault-proxy:big") == big
        with client.pipeline() as pipe:
            for i in range(100):
                pipe.set(f"fault-proxy:{i}", i)
            pipe.mget([f"fault-proxy:{i}" for i in range(100)])
            assert pipe.execute()[-1] == [str(i).encode() for i in range(100)]
    assert proxy.accepted == 1


def test_delay_mode_delays_each_direction(proxy: FaultProxy) -> None:
    with connect(proxy) as client:
        assert client.ping()
        proxy.set_mode("delay", delay=1.0)
        started = time.monotonic()
        assert client.ping()
        assert 1.5 <= time.monotonic() - started < 10
        proxy.set_mode("pass")
        started = time.monotonic()
        assert client.ping()
        assert time.monotonic() - started < 1.0


def test_drop_closes_existing_and_new_connections(proxy: FaultProxy) -> None:
    with connect(proxy) as client:
        assert client.ping()
        proxy.set_mode("drop")
        assert proxy.active_connections == 0
        with pytest.raises(redis.ConnectionError):
            client.ping()
    with connect(proxy) as fresh, pytest.raises(redis.ConnectionError):
        fresh.ping()


def test_reset_resets_existing_and_new_connections(proxy: FaultProxy) -> None:
    with connect(proxy) as client:
        assert client.ping()
        proxy.set_mode("reset")
        with pytest.raises(redis.ConnectionError):
            client.ping()
    with connect(proxy) as fresh, pytest.raises(redis.ConnectionError):
        fresh.ping()


def test_blackhole_makes_calls_time_out(proxy: FaultProxy) -> None:
    with connect(proxy, timeout=0.5) as client:
        assert client.ping()
        proxy.set_mode("blackhole")
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        assert time.monotonic() - started < 5
        with connect(proxy, timeout=0.5) as fresh, pytest.raises(redis.TimeoutError):
            fresh.ping()


def test_blackhole_keeps_connections_open_and_silent(proxy: FaultProxy) -> None:
    proxy.set_mode("blackhole")
    with socket.create_connection((proxy.host, proxy.port), timeout=0.3) as sock:
        sock.sendall(b"PING\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(16)
        assert proxy.active_connections == 1


@pytest.mark.parametrize("fault", ["drop", "reset", "blackhole"])
def test_back_to_pass_works_for_new_connections(proxy: FaultProxy, fault: str) -> None:
    with connect(proxy, timeout=0.5) as client:
        assert client.ping()
        proxy.set_mode(fault)  # type: ignore[arg-type]
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            client.ping()
        proxy.set_mode("pass")
        with connect(proxy) as fresh:
            assert fresh.ping()
            fresh.set("fault-proxy:after", fault)
            assert fresh.get("fault-proxy:after") == fault.encode()


def test_close_all_closes_connections_and_clients_reconnect(proxy: FaultProxy) -> None:
    with connect(proxy) as client:
        assert client.ping()
        assert proxy.active_connections == 1
        proxy.close_all()
        assert proxy.active_connections == 0
        assert client.ping()  # redis-py notices the closed pooled connection and opens a new one
    assert proxy.accepted == 2


def test_unknown_mode_is_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        proxy.set_mode("flaky")  # type: ignore[arg-type]


def test_stop_closes_the_listener(redis_server: RedisServer) -> None:
    proxy = FaultProxy("127.0.0.1", redis_server.port)
    with connect(proxy) as client:
        assert client.ping()
        proxy.stop()
        with pytest.raises(redis.ConnectionError):
            client.ping()
