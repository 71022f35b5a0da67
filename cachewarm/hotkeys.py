"""The hot set of a keyspace: keys whose decayed popularity is above the threshold, plus the pinned keys.

Popularity is kept by the read path (access.py): ``hot:S`` holds forward-decayed scores relative to
``hot:S:epoch``, so a key's decayed read count is score / 2^((now - epoch) / half_life). Both the threshold test
and the cleanup are therefore one ZRANGEBYSCORE / ZREMRANGEBYSCORE on a bound computed from the clock: the cost
grows with the hot set, never with the keyspace. Cold members (far below the threshold) are dropped here so that
a key nobody reads any more leaves the zset instead of waiting for max_tracked eviction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis

from . import store
from .keys import KeyLayout

# Members whose decayed count falls below threshold / COLD_FACTOR are removed by the scan.
COLD_FACTOR = 16.0

HOTSET = """
-- KEYS: hot, epoch, pin, seen   ARGV: threshold, half_life_ms, cold_factor
-- Returns {now_ms, hot members..., '', pinned members...}; removes cold members (and their seen fields).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = tonumber(redis.call('GET', KEYS[2]) or '')
local out = {tostring(now)}
if epoch then
  local scale = math.pow(2, (now - epoch) / tonumber(ARGV[2]))
  local bound = tonumber(ARGV[1]) * scale
  local cold = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (bound / tonumber(ARGV[3])), 'LIMIT', 0, 1000)
  if #cold > 0 then
    redis.call('ZREM', KEYS[1], unpack(cold))
    redis.call('HDEL', KEYS[4], unpack(cold))
  end
  for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], bound, '+inf')) do out[#out + 1] = k end
end
out[#out + 1] = ''
for _, k in ipairs(redis.call('SMEMBERS', KEYS[3])) do out[#out + 1] = k end
return out
"""
hotset_script = store.LuaScript(HOTSET)


@dataclass(frozen=True, slots=True)
class HotSet:
    """One keyspace's keys worth keeping warm, read at `now_ms` (Redis's clock)."""

    now_ms: int
    hot: list[str]
    pinned: list[str]

    def keys(self) -> list[str]:
        """Hot and pinned keys, each once, hot first."""
        return list(dict.fromkeys([*self.hot, *self.pinned]))


def hot_set(client: redis.Redis, layout: KeyLayout, keyspace: str, *, threshold: float,
            half_life: float) -> HotSet:
    """The keyspace's hot keys (decayed reads >= threshold) and pinned keys; drops cold members on the way."""
    raw = hotset_script(client, [layout.hot(keyspace), layout.hot_epoch(keyspace), layout.pinned(keyspace),
                                 layout.seen(keyspace)],
                        [repr(threshold), max(1, int(half_life * 1000)), repr(COLD_FACTOR)])
    items = [item.decode() for item in raw]
    split = items.index("", 1)
    return HotSet(int(items[0]), items[1:split], items[split + 1:])


def pin(client: redis.Redis, layout: KeyLayout, keyspace: str, keys: Iterable[str]) -> int:
    """Pins keys always-warm (scan treats them as hot whatever their reads); returns how many were new."""
    members = list(keys)
    return int(client.sadd(layout.pinned(keyspace), *members)) if members else 0


def unpin(client: redis.Redis, layout: KeyLayout, keyspace: str, keys: Iterable[str]) -> int:
    members = list(keys)
    return int(client.srem(layout.pinned(keyspace), *members)) if members else 0
