"""Scenario 8: access control. Redis ACL users for applications, workers and the broker, and TLS (rediss://).

The rules below are the ones docs/RELIABILITY.md documents; this test is what keeps the documentation honest.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection

from cachewarm import Cache, Settings
from cachewarm.demo.redis_server import RedisServer, free_port
from cachewarm.invalidation.consumer import InvalidationConsumer
from cachewarm.invalidation.publish import publish_invalidation
from cachewarm.redis_layer.keys import INVALIDATION_STREAM

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]

# Commands every cachewarm client needs: plain reads and writes, the Lua scripts (EVALSHA, EVAL, SCRIPT LOAD;
# TIME inside them), PING and SELECT (for a non-zero database). On Redis >= 7.2 add +client|setinfo (redis-py
# sends it on connect and ignores a refusal). Everything @dangerous (FLUSHALL, FLUSHDB, KEYS, CONFIG, DEBUG,
# SHUTDOWN, ...) is taken away again.
_COMMON = ["+@read", "+@write", "+time", "+evalsha", "+eval", "+script|load", "+ping", "+select", "-@dangerous"]
APP_RULES = ["reset", "on", "~cachewarm:*", "resetchannels", *_COMMON]
# Workers use the same keys and commands (consumer groups are @read/@write stream commands) plus INFO for
# `cachewarm status`.
WORKER_RULES = ["reset", "on", "~cachewarm:*", "resetchannels", *_COMMON, "+info"]
# The Celery broker (kombu's Redis transport): its queues, bindings and unacked sets, and its pub/sub channels
# (worker events, remote control). Key patterns span every database, so the broker's keys stay out of cachewarm's.
BROKER_RULES = ["reset", "on", "~celery*", "~cachewarm.*", "~_kombu.*", "~unacked*", "~*.reply.celery.pidbox", "&*",
                "-@all", "+@read", "+@write", "+@pubsub", "+@connection", "+@transaction", "+time", "+eval",
                "+evalsha", "+script|load", "-@dangerous"]

PASSWORDS = {"cw-app": "app-Secret-1", "cw-worker": "worker-Secret-2", "cw-broker": "broker-Secret-3"}


def create_users(admin: redis.Redis) -> None:
    for user, rules in (("cw-app", APP_RULES), ("cw-worker", WORKER_RULES), ("cw-broker", BROKER_RULES)):
        admin.execute_command("ACL", "SETUSER", user, *rules, f">{PASSWORDS[user]}")


def user_url(server: RedisServer, user: str, db: int = 0) -> str:
    return f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{server.port}/{db}"


@pytest.fixture
def acl_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url())
        create_users(admin)
        admin.close()
        yield server


def _denied(client: redis.Redis, *command: Any) -> bool:
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    except redis.exceptions.ResponseError as exc:  # refused inside a script, or disabled by configuration (DEBUG)
        return any(text in str(exc) for text in ("NOPERM", "can't run this command", "command not allowed"))
    return False


DENIED_COMMANDS: list[tuple[Any, ...]] = [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "maxmemory", "1"), ("KEYS", "*"),
    ("SET", "other:1", "x"), ("GET", "celery"), ("DEL", "_kombu.binding.celery"), ("SCRIPT", "FLUSH"),
    ("EVAL", "return redis.call('SET', KEYS[1], 'x')", 1, "other:1"),
    ("EVAL", "return redis.call('FLUSHALL')", 0), ("DEBUG", "SLEEP", "0"), ("SHUTDOWN",), ("ACL", "LIST"),
    ("MONITOR",), ("REPLICAOF", "127.0.0.1", "1"), ("SWAPDB", "0", "1"), ("MIGRATE", "127.0.0.1", "1", "", 0, 1),
]


def test_app_user_cannot_flush_configure_or_write_outside_the_prefix_and_cache_still_works(
        acl_server: RedisServer, write_config: Callable[[str], Path]) -> None:
    config = write_config("""
        [keyspaces.item]
        pattern = "item:{id}"
        source = "python:tests.faults._support:item_source"
        ttl = 60
        tags = ["items"]
    """)
    url = user_url(acl_server, "cw-app")
    app_client = redis.Redis.from_url(url)
    refused = [cmd for cmd in DENIED_COMMANDS if not _denied(app_client, *cmd)]
    assert not refused, f"the app user may run {refused}"

    settings = Settings.load(redis_url=url, config=config, redis_backoff=0)
    with Cache(settings=settings) as cache:
        assert cache.get("item:1") == {"id": "1"}
        assert cache.lookup("item:1").hit
        assert cache.set("item:2", {"id": "2", "x": 1})
        assert cache.get("item:2") == {"id": "2", "x": 1}
        assert cache.exists("item:2")
        assert cache.invalidate_tag("items") >= 1
        assert cache.get("item:2") == {"id": "2"}
        assert cache.delete("item:2")
        cache.get("item:5")
        assert cache.clear("") >= 1
        assert not cache.exists("item:5")
        assert cache.flush_stats()
        assert cache._account.recorder.flush_errors == 0
        assert cache._breaker.until == 0.0, "a Redis call of the read path was refused"
    publish_invalidation("item:1", redis=app_client)
    assert app_client.xlen(INVALIDATION_STREAM) == 1
    app_client.close()
    admin = redis.Redis.from_url(acl_server.url())
    assert admin.exists("other:1") == 0
    assert all(k.startswith(b"cachewarm:") for k in admin.scan_iter())
    admin.close()


def test_worker_user_consumes_invalidations_and_broker_user_carries_celery_messages(
        acl_server: RedisServer, write_config: Callable[[str], Path]) -> None:
    config = write_config("""
        [keyspaces.item]
        pattern = "item:{id}"
        source = "python:tests.faults._support:item_source"
        ttl = 60
    """)
    worker = redis.Redis.from_url(user_url(acl_server, "cw-worker"))
    refused = [cmd for cmd in DENIED_COMMANDS if not _denied(worker, *cmd)]
    assert not refused, f"the worker user may run {refused}"
    settings = Settings.load(redis_url=user_url(acl_server, "cw-worker"), config=config)
    with Cache(settings=settings.model_copy(update={"redis_url": user_url(acl_server, "cw-app")})) as cache:
        cache.get("item:7")
        publish_invalidation("item:7", redis=worker)
        consumer = InvalidationConsumer(settings, block_ms=50)
        try:
            assert consumer.poll(block_ms=50) >= 1
        finally:
            consumer.close()
        assert not cache.exists("item:7")
        assert consumer.stats["redis_errors"] == 0
    info: Any = worker.xinfo_groups(INVALIDATION_STREAM)
    assert info[0]["pending"] == 0
    worker.close()

    # The broker user: kombu's Redis transport on database 1 publishes and consumes; cachewarm's keys are out of
    # its reach, and its keys out of the app's.
    with Connection(user_url(acl_server, "cw-broker", db=1)) as conn:
        for name in ("celery", "cachewarm.refresh"):  # Celery's default queue and one of cachewarm's own
            queue = conn.SimpleQueue(name)
            queue.put({"hello": "world"}, serializer="json")
            message = queue.get(timeout=5)
            assert message.payload == {"hello": "world"}
            message.ack()
            queue.close()
    broker = redis.Redis.from_url(user_url(acl_server, "cw-broker", db=1))
    assert _denied(broker, "GET", "cachewarm:v:item:7")
    assert _denied(broker, "FLUSHDB")
    broker.close()


# ---- TLS ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), made with the openssl CLI."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "redis.crt", where / "redis.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[RedisServer, int]]:
    cert, key = certificate
    tls_port = free_port()
    with RedisServer(extra_args=["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file",
                                 str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]) as server:
        admin = redis.Redis.from_url(server.url())
        admin.config_set("requirepass", "tls-Secret-4")
        admin.close()
        yield server, tls_port


def test_rediss_urls_with_a_self_signed_certificate_are_accepted(
        tls_server: tuple[RedisServer, int], certificate: tuple[Path, Path],
        write_config: Callable[[str], Path]) -> None:
    _server, tls_port = tls_server
    cert, _key = certificate
    config = write_config("""
        [keyspaces.item]
        pattern = "item:{id}"
        source = "python:tests.faults._support:item_source"
        ttl = 60
    """)
    base = f"rediss://:tls-Secret-4@127.0.0.1:{tls_port}/0"
    for url in (f"{base}?ssl_cert_reqs=required&ssl_ca_certs={cert}", f"{base}?ssl_cert_reqs=none"):
        settings = Settings.load(redis_url=url, config=config, redis_backoff=0)
        with Cache(settings=settings) as cache:
            assert cache.get("item:1") == {"id": "1"}
            assert cache.lookup("item:1").hit, url
            assert cache.set("item:2", {"id": "2"})
            assert cache.flush_stats()
    # Verification is real: without the CA the certificate is refused (and the read path falls back).
    settings = Settings.load(redis_url=f"{base}?ssl_cert_reqs=required", config=config, redis_backoff=0)
    with Cache(settings=settings) as cache:
        assert cache.get("item:3") == {"id": "3"}
        assert not cache.lookup("item:1").hit
        with pytest.raises(Exception, match="unavailable"):
            cache.set("item:3", {"id": "3"})
