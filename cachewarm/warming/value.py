"""What a refresh is worth: the reads it serves before the key's next refresh, priced in reader waiting.

A refresh costs one source request. It pays when the reads it keeps warm would otherwise have waited for the
source: each expected read before the next refresh saves about one miss, and a miss costs the reader the
keyspace's source latency (`miss_cost`: measured by the refreshes, refresh.py's ``fetch_us:S`` / ``fetches:S``,
or set). So a key is worth refreshing when

    expected reads per refresh period * miss_cost >= refresh_worth

where `refresh_worth` (per keyspace, seconds) is the exchange rate: the reader waiting one source request must
save. The read rate comes from the key's decayed read count (popularity.py): steady Poisson reads at `rate` per
second keep a forward-decayed count near ``rate * half_life / ln 2``, so ``rate = decayed * ln 2 / half_life``;
the refresh period is ``ttl - refresh_ahead`` (a kept-warm key is refreshed that often).

The test is a bound on the decayed count (`ValuePolicy.bound`), so the scan's one HOTSET per shard (hotkeys.py)
applies it as it applied the old fixed threshold, which stays as a floor (``CACHEWARM_HOT_THRESHOLD``: no key at
or below it is refreshed). ``refresh_worth = 0`` leaves the floor alone: the behaviour before this policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..config.keyspaces import DEFAULT_REFRESH_WORTH

__all__ = ["DEFAULT_MISS_COST", "DEFAULT_REFRESH_WORTH", "ValuePolicy", "policy_for", "read_rate"]

LN2 = math.log(2)

# The default exchange rate (KeyspaceConfig.refresh_worth, config/keyspaces.py) is DEFAULT_REFRESH_WORTH: at a
# 50 ms source it asks for 0.5 expected reads per refresh period (docs/ECONOMY.md says how it was chosen).
# The miss cost assumed until a refresh has measured the source (higher than most sources: the first scans
# refresh more rather than less, so the measurement comes).
DEFAULT_MISS_COST = 0.1


def read_rate(decayed: float, half_life: float) -> float:
    """Reads per second of a key whose decayed read count is `decayed` (steady Poisson reads)."""
    return decayed * LN2 / half_life


def refresh_period(ttl: float, refresh_ahead: float) -> float:
    """Seconds between two refreshes of a key kept warm."""
    return ttl - refresh_ahead if refresh_ahead > 0 else ttl


def measured_miss_cost(stats: Mapping[str, float], keyspace: str) -> float | None:
    """The keyspace's mean source latency from the refreshes' counters (None: nothing measured yet)."""
    fetches = stats.get(f"fetches:{keyspace}", 0.0)
    return stats.get(f"fetch_us:{keyspace}", 0.0) / fetches / 1e6 if fetches > 0 else None


@dataclass(frozen=True)
class ValuePolicy:
    """One keyspace's worth test at one scan."""

    refresh_worth: float  # seconds of reader waiting one source request must save; 0: the floor alone
    miss_cost: float      # seconds a miss makes its reader wait (the source latency)
    period: float         # seconds between refreshes of a warm key
    half_life: float      # of the decayed read counts
    floor: float = 0.0    # the old hot threshold: at or below it nothing is refreshed

    def expected_reads(self, decayed: float) -> float:
        """Reads expected before the key's next refresh."""
        return read_rate(decayed, self.half_life) * self.period

    def worth(self, decayed: float) -> float:
        """Seconds of reader waiting one refresh of the key is expected to save."""
        return self.expected_reads(decayed) * self.miss_cost

    def min_reads(self) -> float:
        """Expected reads per refresh period at which a refresh pays (0 with no exchange rate)."""
        if self.refresh_worth <= 0:
            return 0.0
        return self.refresh_worth / self.miss_cost if self.miss_cost > 0 else math.inf

    def bound(self) -> float:
        """The decayed read count above which a key is refreshed: the worth test's, or the floor when higher."""
        needed = self.min_reads() * self.half_life / (LN2 * self.period)
        return max(self.floor, needed)

    def pays(self, decayed: float) -> bool:
        """Whether a refresh of the key is worth its source request (the HOTSET rule: strictly above `bound`)."""
        return decayed > self.bound()


def policy_for(*, refresh_worth: float, miss_cost: float | None, measured: float | None, ttl: float,
               refresh_ahead: float, half_life: float, floor: float) -> ValuePolicy:
    """The policy of a keyspace: the set miss cost, else the measured one, else DEFAULT_MISS_COST."""
    cost = miss_cost if miss_cost is not None else measured if measured is not None else DEFAULT_MISS_COST
    return ValuePolicy(refresh_worth, cost, refresh_period(ttl, refresh_ahead), half_life, floor)
