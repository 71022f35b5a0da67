"""Stream retention gaps: events trimmed (or deleted) from the stream before the consumer group read them.

The stream is trimmed to about ``stream_maxlen`` entries; a group offline long enough loses events it never read,
and nothing tells it which keys they named. So a gap is detected, never ignored, and answered by dropping what any
lost event could have invalidated: every cached value (fence bumped, value deleted), the fence of every load in
flight (its lease), and the generation of every tag (fencing loads in flight of tagged keys).

Detection runs atomically with every read of new entries (`CHECK_AND_READ`, one Lua script), so the group's
last-delivered id L cannot move past a hole between the check and the read. With the stream's first entry F,
``entries-added`` A, length N, the group's ``entries-read`` E and ``max-deleted-entry-id`` D (Redis 7):

- D > L: an entry after L was deleted (XDEL) unread;
- stream empty and last-generated-id > L: entries after L were added and all removed;
- F > L: entries between L and F may have been trimmed. Lost = A - E - N when E is known (A - N for a group that
  has read nothing, L = 0-0); when neither is known (Redis < 7, or E undeterminable) it is taken as a gap.

A brand-new stream, a group created on an untrimmed stream, or a caught-up group whose read entries were trimmed
is not a gap. The detection is recorded (``pending`` in the ``invalidation:gap`` hash) before the read moves L, so
a consumer killed while answering leaves it for another to finish (taken over after ``claim_idle_ms``); once
answered, ``answered`` holds the hole's upper bound (the first entry after it), so it is not answered twice.
Entries deleted while pending (XAUTOCLAIM reports them; a re-read gives them without fields) are gaps too.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from .. import store
from ..keys import KeyLayout
from ..keyspaces import KeyspaceRegistry
from ..settings import Settings
from .apply import hot_keys

log = logging.getLogger("cachewarm.invalidation")

SCAN_COUNT = 1000

_LUA_IDS = """
local function idparts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms or id, seq or '0'
end
local function numcmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
local function idcmp(a, b)
  local am, as = idparts(a)
  local bm, bs = idparts(b)
  local c = numcmp(am, bm)
  if c ~= 0 then return c end
  return numcmp(as, bs)
end
local function idmax(a, b)
  if not a then return b end
  if idcmp(b, a) > 0 then return b end
  return a
end
local function kv(a)
  local t = {}
  for i = 1, #a, 2 do t[a[i]] = a[i + 1] end
  return t
end
"""

CHECK_AND_READ = _LUA_IDS + """
-- KEYS: stream, gap hash   ARGV: group, consumer, count, now_ms, ids to acknowledge (applied by the caller)...
-- Returns {upper id of a newly found gap or false, lost count (-1 unknown), last-generated id, XREADGROUP reply}.
local ok, sinfo = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
if not ok then return redis.error_reply('NOGROUP no stream ' .. KEYS[1]) end
local s = kv(sinfo)
local g
for _, gi in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local t = kv(gi)
  if t['name'] == ARGV[1] then g = t end
end
if not g then return redis.error_reply('NOGROUP no group ' .. ARGV[1]) end
if #ARGV > 4 then redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 5)) end
local L = g['last-delivered-id']
local E = g['entries-read']
local A = s['entries-added']
local N = tonumber(s['length'])
local lastgen = s['last-generated-id']
local D = s['max-deleted-entry-id']
local upper, lost = nil, -1
if D and idcmp(D, L) > 0 then upper = D end
local first = s['first-entry']
if first then
  if idcmp(first[1], L) > 0 then
    if A and E then lost = A - E - N
    elseif A and L == '0-0' then lost = A - N end
    if lost ~= 0 then upper = idmax(upper, first[1]) end
  end
elseif idcmp(lastgen, L) > 0 then
  upper = idmax(upper, lastgen)
  if A and E then lost = A - E elseif A and L == '0-0' then lost = A end
end
if upper then
  local answered = redis.call('HGET', KEYS[2], 'answered')
  if answered and idcmp(upper, answered) <= 0 then
    upper = nil
  else
    local pending = redis.call('HGET', KEYS[2], 'pending')
    if not pending or idcmp(upper, pending) > 0 then redis.call('HSET', KEYS[2], 'pending', upper) end
    redis.call('HSET', KEYS[2], 'pending_at', ARGV[4], 'pending_by', ARGV[2])
  end
end
local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
return {upper or false, lost, lastgen, read}
"""
check_and_read_script = store.LuaScript(CHECK_AND_READ)

RECORD = _LUA_IDS + """
-- KEYS: gap hash   ARGV: upper id, now_ms, consumer, force ('1': answer even if an answer covered upper).
local answered = redis.call('HGET', KEYS[1], 'answered')
if ARGV[4] ~= '1' and answered and idcmp(ARGV[1], answered) <= 0 then return 0 end
local pending = redis.call('HGET', KEYS[1], 'pending')
if not pending or idcmp(ARGV[1], pending) > 0 then redis.call('HSET', KEYS[1], 'pending', ARGV[1]) end
redis.call('HSET', KEYS[1], 'pending_at', ARGV[2], 'pending_by', ARGV[3])
return 1
"""
record_script = store.LuaScript(RECORD)

ANSWERED = _LUA_IDS + """
-- KEYS: gap hash, refresh stats   ARGV: answered id, keys dropped.  Marks the gap answered and counts it.
local answered = redis.call('HGET', KEYS[1], 'answered')
if not answered or idcmp(ARGV[1], answered) > 0 then redis.call('HSET', KEYS[1], 'answered', ARGV[1]) end
local pending = redis.call('HGET', KEYS[1], 'pending')
if pending and idcmp(pending, ARGV[1]) <= 0 then redis.call('HDEL', KEYS[1], 'pending', 'pending_at', 'pending_by') end
redis.call('HINCRBY', KEYS[2], 'invalidation_gaps', 1)
redis.call('HINCRBY', KEYS[2], 'invalidation_gap_keys', ARGV[2])
return 1
"""
answered_script = store.LuaScript(ANSWERED)

DROP = """
-- ARGV: value prefix, lease prefix, tag gen prefix, fence prefix, fence_ttl, tag set prefix, redis key names...
-- A value: fence bumped, value deleted. A lease (a load in flight): fence bumped. A tag generation, or the
-- generation of a tag that has a member set: bumped. Returns the cache keys whose value was deleted.
local vp, lp, tp, fp, ttl, sp = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local dropped = {}
for i = 7, #ARGV do
  local name = ARGV[i]
  local key
  if string.sub(name, 1, #vp) == vp then
    key = string.sub(name, #vp + 1)
    if redis.call('DEL', name) == 1 then dropped[#dropped + 1] = key end
  elseif string.sub(name, 1, #lp) == lp then
    key = string.sub(name, #lp + 1)
  elseif string.sub(name, 1, #tp) == tp or string.sub(name, 1, #sp) == sp then
    local gen = name
    if string.sub(name, 1, #sp) == sp then gen = tp .. string.sub(name, #sp + 1) end
    if redis.call('TYPE', gen)['ok'] ~= 'string' and redis.call('EXISTS', gen) == 1 then gen = nil end
    if gen then
      redis.call('INCR', gen)
      redis.call('EXPIRE', gen, ttl)
    end
  end
  if key then
    redis.call('HINCRBY', fp .. key, 'g', 1)
    redis.call('EXPIRE', fp .. key, ttl)
  end
end
return dropped
"""
drop_script = store.LuaScript(DROP)


def gap_hash(layout: KeyLayout) -> str:
    return layout.invalidation_gap()


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


@dataclass(frozen=True, slots=True)
class Gap:
    """A hole found in the stream: the lost entries' ids are at most `upper`; once answered, a hole at or below
    it is not answered again."""

    upper: str
    lost: int  # entries lost, -1 when Redis cannot tell
    reason: str


def drop_everything(client: redis.Redis, layout: KeyLayout, *, fence_ttl: int,
                    keyspaces: KeyspaceRegistry | None = None,
                    half_life: float = Settings.model_fields["hot_half_life"].default,
                    threshold: float = Settings.model_fields["hot_threshold"].default,
                    on_hot_keys: Callable[[list[str]], None] | None = None,
                    heartbeat: Callable[[], None] | None = None) -> int:
    """Fences and deletes every cached value, fences every load in flight, bumps every tag generation (SCAN in
    batches, one script per batch). Hot keys among the dropped go to `on_hot_keys`. Returns values deleted."""
    args = [layout.value_prefix, layout.lease_prefix, layout.tag_gen_prefix, layout.fence_prefix, fence_ttl,
            layout.tag_prefix]
    dropped_total = 0
    cursor: Any = 0
    match = _glob_escape(layout.prefix) + "*"
    wanted = (layout.value_prefix.encode(), layout.lease_prefix.encode(), layout.tag_gen_prefix.encode(),
              layout.tag_prefix.encode())
    while True:
        reply: Any = client.scan(cursor=cursor, match=match, count=SCAN_COUNT)
        cursor, names = reply
        batch = [n for n in names if isinstance(n, bytes) and n.startswith(wanted)]
        if batch:
            dropped = [k.decode("utf-8", "surrogateescape") for k in drop_script(client, [], [*args, *batch])]
            dropped_total += len(dropped)
            if on_hot_keys is not None and keyspaces is not None and dropped:
                hot = hot_keys(client, dropped, keyspaces=keyspaces, layout=layout, half_life=half_life,
                               threshold=threshold)
                if hot:
                    on_hot_keys(hot)
        if heartbeat is not None:
            heartbeat()
        if int(cursor) == 0:
            return dropped_total


def record_gap(client: redis.Redis, layout: KeyLayout, upper: str, consumer: str, *, force: bool = False) -> bool:
    """Records a gap found outside CHECK_AND_READ (before answering it, so that a consumer killed meanwhile
    leaves it to another); False when an answer already covers it (never with `force`)."""
    return bool(record_script(client, [gap_hash(layout)],
                              [upper, int(time.time() * 1000), consumer, "1" if force else "0"]))


def mark_answered(client: redis.Redis, layout: KeyLayout, upper: str, dropped: int) -> None:
    answered_script(client, [gap_hash(layout), layout.refresh_stats], [upper, dropped])


def stale_pending_gap(client: redis.Redis, layout: KeyLayout, idle_ms: int) -> str | None:
    """A gap recorded by a consumer that has not finished answering it for `idle_ms` (killed, most likely)."""
    raw: Any = client.hmget(gap_hash(layout), "pending", "pending_at")
    pending, at = raw
    if pending is None:
        return None
    if at is not None and time.time() * 1000 - float(at) < idle_ms:
        return None
    return str(pending.decode() if isinstance(pending, bytes) else pending)
