"""The auditor's pure parts: its settings and their errors, the comparison, the causes' precedence, the grace
window, the sampling rounds and the nines (fakeredis: what is tested here does not depend on Redis itself; the
auditor on real servers is tests/audit/)."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import fakeredis
import pytest
from click.testing import CliRunner

from cachewarm.audit import causes, ledger
from cachewarm.audit.auditor import KeyspaceAuditor
from cachewarm.audit.checking import same_source, stale
from cachewarm.audit.sampling import Sampler
from cachewarm.cli import cli
from cachewarm.config.keyspaces import AUDIT_BUDGET, KeyspaceRegistry
from cachewarm.config.sources import Fetched
from cachewarm.errors import ConfigError
from cachewarm.outcomes import AuditCause, AuditResult
from cachewarm.redis_layer import envelope
from cachewarm.redis_layer.envelope import Entry
from cachewarm.redis_layer.keys import CONSUMER_GROUP, INVALIDATION_STREAM, KeyLayout
from tests.support.audit_sources import ITEMS

L = KeyLayout()


def keyspace(**fields: object) -> KeyspaceRegistry:
    base: dict[str, object] = {"pattern": "product:{id}", "source": "http://127.0.0.1:8000/products/{id}", "ttl": 60}
    return KeyspaceRegistry.from_mapping({"product": {**base, **fields}})


@pytest.mark.parametrize(("fields", "says"), [
    ({"audit_budget": -1}, "keyspaces.product.audit_budget: Input should be greater than or equal to 0"),
    ({"audit_budget": 5, "rate": 2}, "keyspaces.product: audit_budget (5.0) is above rate (2.0): audit "
     "requests count against the rate budget; lower audit_budget (0 turns the auditor off) or raise rate"),
    ({"audit_grace": -1}, "keyspaces.product.audit_grace: Input should be greater than or equal to 0"),
    ({"audit_grace": 60}, "keyspaces.product: audit_grace (60.0) must be less than ttl (60.0): a value would expire "
     "before the auditor's second look; lower audit_grace or leave it unset"),
    ({"audit_repair": "sometimes"}, "keyspaces.product.audit_repair: Input should be a valid boolean"),
])
def test_bad_audit_settings_are_one_line_naming_the_setting(fields: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        keyspace(**fields)
    assert str(info.value).startswith(says), str(info.value)


def test_the_audit_is_on_by_default_with_a_small_budget_never_above_the_rate() -> None:
    ks = keyspace()["product"]
    assert ks.audit_budget == AUDIT_BUDGET > 0 and ks.config.audit_repair and ks.config.audit_grace is None
    assert keyspace(rate=0.2)["product"].audit_budget == 0.2  # the default fits itself under a smaller rate
    assert keyspace(audit_budget=0)["product"].audit_budget == 0


def test_check_config_names_the_audit_setting_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "cachewarm.toml"
    config.write_text('[keyspaces.product]\npattern = "product:{id}"\nsource = "http://h/{id}"\nttl = 60\n'
                      "rate = 1\naudit_budget = 3\n")
    result = CliRunner().invoke(cli, ["check-config"], env={"CACHEWARM_CONFIG": str(config)})
    assert result.exit_code == 2
    assert "audit_budget (3.0) is above rate (1.0)" in result.output and "lower audit_budget" in result.output


def entry(value: object, version: int | None = None, fetched_ms: int = 1000) -> Entry:
    return Entry(value, value is not None, fetched_ms + 60_000, fetched_ms, version)


def test_stale_by_version_when_versioned_else_by_content() -> None:
    assert stale(entry({"p": 1}, 1), Fetched({"p": 1, "at": 2}, 2), versioned=True)
    assert not stale(entry({"p": 1}, 2), Fetched({"p": 0}, 1), versioned=True)  # a lagging replica: not stale
    assert not stale(entry({"p": 1, "at": 1}, 2), Fetched({"p": 1, "at": 9}, 2), versioned=True)
    assert stale(entry({"p": 1}), Fetched({"p": 2}), versioned=False)
    assert not stale(entry({"p": 1}), Fetched({"p": 1}), versioned=False)
    assert stale(entry({"p": 1}), Fetched(None), versioned=False)  # deleted at the source
    assert stale(entry(None), Fetched({"p": 1}), versioned=False)  # a remembered 404 of an item that exists now
    assert not stale(entry(None), Fetched(None), versioned=False)


def test_same_source_ignores_the_body_when_versioned() -> None:
    assert same_source(Fetched({"at": 1}, 3), Fetched({"at": 2}, 3), versioned=True)
    assert not same_source(Fetched({"at": 1}, 3), Fetched({"at": 1}, 4), versioned=True)
    assert not same_source(Fetched({"p": 1}), Fetched({"p": 2}), versioned=False)


def classify(client: fakeredis.FakeRedis, *, fetched_ms: int = 10_000, second: int = 2) -> AuditCause:
    return causes.classify(client, L, key="product:1", tags=["products"], cached=entry({"p": 1}, 1, fetched_ms),
                           first=Fetched({"p": 2}, 2), second=Fetched({"p": second}, second), window_ms=1000,
                           versioned=True)


def test_causes_in_their_order() -> None:
    client = fakeredis.FakeRedis()
    assert classify(client) is AuditCause.MISSED
    assert classify(client, second=3) is AuditCause.FLAPPING
    client.hset(L.fence("product:1"), "i", 9_500)  # an invalidation applied just before the fetch
    assert classify(client) is AuditCause.RACED
    client.hset(L.fence("product:1"), "i", 5_000)  # long before: not this change's
    assert classify(client) is AuditCause.MISSED
    client.xadd(INVALIDATION_STREAM, {"tag": "products"})  # no group yet: undelivered
    assert classify(client) is AuditCause.LATE


def test_late_means_undelivered_or_pending_not_acknowledged() -> None:
    client = fakeredis.FakeRedis()
    client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="$", mkstream=True)
    done = client.xadd(INVALIDATION_STREAM, {"key": "product:1"})
    client.xadd(INVALIDATION_STREAM, {"key": "product:2"})
    client.xreadgroup(CONSUMER_GROUP, "c", {INVALIDATION_STREAM: ">"})
    client.xack(INVALIDATION_STREAM, CONSUMER_GROUP, done)
    assert not causes.in_flight(client, "product:1", ())  # delivered and acknowledged
    assert causes.in_flight(client, "product:2", ())  # pending
    client.xadd(INVALIDATION_STREAM, {"key": "product:3"})
    assert causes.in_flight(client, "product:3", ())  # undelivered
    assert not causes.in_flight(client, "product:4", ["other"])


def test_the_lag_is_the_age_of_the_oldest_event_not_applied() -> None:
    client = fakeredis.FakeRedis()
    assert causes.unapplied_age(client, 50_000) == 0.0
    client.xgroup_create(INVALIDATION_STREAM, CONSUMER_GROUP, id="$", mkstream=True)
    client.xadd(INVALIDATION_STREAM, {"key": "k"}, id="40000-0")
    assert causes.unapplied_age(client, 50_000) == 10.0
    client.xreadgroup(CONSUMER_GROUP, "c", {INVALIDATION_STREAM: ">"})
    assert causes.unapplied_age(client, 50_000) == 10.0  # pending still
    client.xack(INVALIDATION_STREAM, CONSUMER_GROUP, "40000-0")
    assert causes.unapplied_age(client, 50_000) == 0.0


def test_a_round_hands_out_each_recently_read_key_once() -> None:
    client = fakeredis.FakeRedis()
    keys = [f"product:{i}" for i in range(50)]
    for i, key in enumerate(keys):
        client.zadd(L.hot("product", i % 16), {key: 1.0 + i})
    sampler = Sampler(client, L, "product")
    first = [sampler.next() for _ in range(50)]
    assert sorted(first) == sorted(keys) and sampler.rounds == 1  # type: ignore[type-var]
    assert sampler.next() in keys and sampler.rounds == 2
    assert Sampler(client, L, "empty").next() is None


def test_nines() -> None:
    assert ledger.Tally(1000, 1, 0).nines == pytest.approx(3.0)
    assert ledger.Tally(1_000_000, 10, 0).nines == pytest.approx(5.0)
    clean = ledger.Tally(3600, 0, 0)
    assert clean.nines == pytest.approx(math.log10(3600)) and clean.nines_floor
    assert ledger.Tally(0, 0, 0).nines is None
    assert ledger.describe(ledger.Tally(1000, 1, 1)) == "1 bad / 1000 (3.0 nines)"
    assert ledger.describe(clean) == "0 bad / 3600 (>= 3.6 nines)"


def auditor(client: fakeredis.FakeRedis, source: str) -> KeyspaceAuditor:
    table = {"pattern": "product:{id}", "ttl": 60, "audit_grace": 0,
             "source": f"python:tests.support.audit_sources:{source}"}
    ks = KeyspaceRegistry.from_mapping({"product": table})["product"]
    return KeyspaceAuditor(client, L, ks, http=None, budget=None, repairer=None, record=False)  # type: ignore[arg-type]


def cache(client: fakeredis.FakeRedis, key: str, value: object) -> None:
    client.set(L.value(key), envelope.encode(envelope.dumps(value), fetched_ms=int(time.time() * 1000),
                                             ttl_ms=60_000))


def test_a_look_then_a_second_look_after_the_window() -> None:
    client, stop = fakeredis.FakeRedis(), threading.Event()
    audit = auditor(client, "item")
    ITEMS.update({"1": {"p": 1}, "2": {"p": 2}, "3": {"p": 3}})
    for i in "123":
        cache(client, f"product:{i}", {"p": int(i)})
    assert audit.check("product:1", stop) is AuditResult.CONSISTENT
    assert audit.check("product:9", stop) is AuditResult.SKIPPED  # nothing cached
    ITEMS.update({"2": {"p": 20}, "3": {"p": 30}})
    assert audit.check("product:2", stop) is None and audit.check("product:3", stop) is None  # mismatches: wait
    cache(client, "product:3", {"p": 30})  # an invalidation and a reload came within the window
    results = {p.key: audit.recheck(p, stop) for p in sorted(audit.pending)}
    assert results == {"product:2": AuditResult.INCONSISTENT, "product:3": AuditResult.RESOLVED}
    assert [(f.key, f.cause, f.repaired) for f in audit.findings] == [("product:2", AuditCause.MISSED, False)]


def test_a_source_that_answers_differently_each_time_is_not_compared_by_content() -> None:
    client, stop = fakeredis.FakeRedis(), threading.Event()
    audit = auditor(client, "volatile")
    cache(client, "product:1", {"id": "1", "generated": -1})
    assert audit.check("product:1", stop) is AuditResult.UNCOMPARABLE
    assert not audit.pending and not audit.findings and not audit.gave_up
    audit.check("product:1", stop)
    audit.check("product:1", stop)
    assert audit.gave_up  # never once comparable: the keyspace's audit stops (a warning names version_field)
    audit.run(stop)  # returns at once
