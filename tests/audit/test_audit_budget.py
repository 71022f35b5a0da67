"""The auditor's budget against the session's redis-server: its own bucket and the keyspace's `rate`."""

from __future__ import annotations

import threading

import redis

from cachewarm.audit.budget import AuditBudget
from cachewarm.config.keyspaces import KeyspaceRegistry
from cachewarm.redis_layer.keys import KeyLayout

L = KeyLayout()


def keyspace(**fields: object) -> KeyspaceRegistry:
    base = {"pattern": "product:{id}", "source": "http://127.0.0.1:8000/products/{id}", "ttl": 60}
    return KeyspaceRegistry.from_mapping({"product": {**base, **fields}})


def test_an_audit_request_takes_a_token_of_the_keyspaces_rate_too(redis_client: redis.Redis) -> None:
    ks = keyspace(rate=10, audit_budget=5)["product"]
    budget = AuditBudget(redis_client, L, ks)
    assert budget.take(threading.Event())
    # Each bucket starts full (burst) and lost one token: the refreshes of this keyspace have one fewer.
    assert float(redis_client.hget(L.rate("product"), "t") or -1) < 10  # type: ignore[arg-type]
    assert float(redis_client.hget(L.audit_rate("product"), "t") or -1) < 1  # type: ignore[arg-type]


def test_a_spent_budget_waits_and_a_stop_ends_the_wait(redis_client: redis.Redis) -> None:
    budget = AuditBudget(redis_client, L, keyspace(audit_budget=0.01)["product"])  # a token every 100 s
    stop = threading.Event()
    assert budget.take(stop)  # the one token of its burst
    threading.Timer(0.2, stop.set).start()
    assert not budget.take(stop)  # waited for the next, until stopped


def test_a_budget_of_zero_never_asks(redis_client: redis.Redis) -> None:
    assert not AuditBudget(redis_client, L, keyspace(audit_budget=0)["product"]).take(threading.Event())
    assert not redis_client.exists(L.audit_rate("product"))
