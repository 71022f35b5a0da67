"""The simulator's model on small traces whose outcome is known: a steadily read key worth refreshing always
hits, one not worth it behaves as cache-aside, a budget refreshes the more read key, the true-rate reference uses
the rates it is given, and a refresh nobody read is wasted."""

from __future__ import annotations

from cachewarm.simulation.model import Params, simulate


def params(**overrides: object) -> Params:
    base: dict[str, object] = {"ttl": 5.0, "refresh_ahead": 1.0, "latency": 0.05, "refresh_worth": 0.025,
                               "miss_cost": 0.05, "refresh_budget": None, "half_life": 60.0, "floor": 0.9,
                               "scan_interval": 0.25}
    base.update(overrides)
    return Params(**base)  # type: ignore[arg-type]


def steady(key: str, every: float, until: float, start: float = 0.0) -> list[tuple[float, str]]:
    n = int((until - start) / every)
    return [(start + i * every, key) for i in range(n)]


def test_a_steadily_read_key_worth_refreshing_always_hits() -> None:
    reads = steady("k", 0.5, 300)  # 8 reads per 4 s period: worth it
    f = simulate(reads, params(), since=100, hot=frozenset({"k"}))
    assert f.reads == f.hits == f.hot_reads == f.hot_hits
    assert f.loads == 0
    assert 45 <= f.refreshes <= 52  # one per refresh period (4 s + the refresh's 70 ms) over ~200 s
    assert f.wasted == 0


def test_a_key_not_worth_a_refresh_behaves_as_cache_aside() -> None:
    reads = steady("k", 12.0, 1200)  # a third of a read per 4 s period; each finds its value expired (ttl 5)
    f = simulate(reads, params(), since=100)
    assert f.refreshes == 0 and f.hits == 0 and f.loads == f.reads
    # with the old policy (no exchange rate) the same key is hot (decayed reads above 0.9) and refreshed
    old = simulate(reads, params(refresh_worth=0.0), since=100)
    assert old.refreshes > 0 and old.hits == old.reads
    assert old.wasted > old.refreshes / 2  # a read every 12 s, a refresh every ~4: most are never read


def test_within_a_budget_the_more_read_key_is_refreshed() -> None:
    often = [f"often:{i}" for i in range(10)]  # 16 reads per refresh period each
    seldom = [f"seldom:{i}" for i in range(10)]  # 0.67 each: worth a refresh too, but less
    reads = sorted([read for i, key in enumerate(often) for read in steady(key, 0.25, 400, start=i * 0.41)]
                   + [read for i, key in enumerate(seldom) for read in steady(key, 6.0, 400, start=i * 0.37)])
    unlimited = simulate(reads, params(), since=200, hot=frozenset(often))
    assert unlimited.hits == unlimited.reads and unlimited.left_out == 0
    # a budget for the ten often-read keys' refreshes (10 per 4.07 s: 2.46/s) and a little more, not for all 20
    f = simulate(reads, params(refresh_budget=3.0), since=200, hot=frozenset(often))
    assert f.left_out > 0
    assert f.hot_hits / f.hot_reads > 0.99  # the more read keys are kept warm...
    assert (f.hits - f.hot_hits) / (f.reads - f.hot_reads) < 0.5  # ... the others mostly miss
    assert f.refreshes / 200 <= 3.0 * 1.05


def test_the_reference_uses_the_true_rates_it_is_given() -> None:
    reads = steady("k", 0.5, 300)
    # told the key is read once a minute: not worth a refresh, so every TTL's first read misses
    f = simulate(reads, params(), since=100, oracle={"k": 1 / 60})
    assert f.refreshes == 0 and f.loads > 0
    assert simulate(reads, params(), since=100, oracle={"k": 2.0}).loads == 0


def test_learning_misses_of_keys_first_read_in_the_window() -> None:
    reads = sorted(steady("old", 0.5, 200) + steady("new", 0.5, 200, start=150.1))
    f = simulate(reads, params(refresh_worth=0.0), since=100, hot=frozenset({"old", "new"}))
    assert f.learn_keys == 1  # "old" was first read before the window
    assert f.learn_misses == 1  # its first read misses; the load serves the next
