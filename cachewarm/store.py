"""How values, fences and leases live in Redis: the Lua scripts every path runs, and thin runners for them.

Each script is one round trip and atomic. The key layout is in keys.py; the value format in envelope.py.

- A hit is a plain GET; its accounting is buffered and flushed in batches (access.py).
- ACQUIRE (a miss): the fresh value if another loader just wrote it; else the key's lease and its fence token;
  else a place among the waiters, who are woken through a list (BLPOP) instead of polling.
- WRITE (a load or a refresh): stores the value only if the fence token taken before the fetch is unchanged (no
  invalidation of the key or of its tags since) and the version does not go back; then releases the lease and
  wakes the waiters.
- INVALIDATE_KEY / TAG_BUMP / TAG_DRAIN: bump generations (fencing every load in flight) and delete values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio

# Age buckets (seconds) of the served-value age histogram; the Lua below counts into them.
AGE_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

_LUA_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function env_version(v)
  if not v then return nil end
  local bar = string.find(v, '|', 30, true)
  if not bar or bar == 30 then return nil end
  return tonumber(string.sub(v, 30, bar - 1))
end
local function wake_waiters(wake_key, waiters_key, mark)
  local waiting = tonumber(redis.call('GET', waiters_key) or '0')
  if waiting > 0 then
    redis.call('DEL', waiters_key)
    for _ = 1, waiting do redis.call('RPUSH', wake_key, mark) end
    redis.call('PEXPIRE', wake_key, 10000)
  end
end
local function fence_token(fence_key, first_tag, ntags)
  local token = redis.call('HGET', fence_key, 'g') or '0'
  for i = first_tag, first_tag + ntags - 1 do
    token = token .. ':' .. (redis.call('GET', KEYS[i]) or '0')
  end
  return token
end
"""

ACQUIRE = _LUA_COMMON + """
-- KEYS: value, lease, waiters, fence, tag gens...   ARGV: token, lease_ms, ntags
-- Returns {1, value} fresh value; {0, value|false, fence} you load; {2, value|false, lease pttl} wait.
local v = redis.call('GET', KEYS[1])
if v and tonumber(string.sub(v, 1, 13)) > now_ms() then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, v or false, fence_token(KEYS[4], 5, tonumber(ARGV[3]))}
end
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[2]) * 2)
return {2, v or false, redis.call('PTTL', KEYS[2])}
"""

FENCE = _LUA_COMMON + """
-- KEYS: fence, tag gens...   ARGV: ntags.  The token a refresh takes before it fetches.
return fence_token(KEYS[1], 2, tonumber(ARGV[1]))
"""

WRITE = _LUA_COMMON + """
-- KEYS: value, fence, lease, wake, waiters, tag gens (n), tag sets (n)
-- ARGV: expected fence token ('*': unfenced), envelope, px, lease token (''), version (''), n, key, fence_ttl,
--       bump ('1': a writer's set, which fences every load in flight of the key)
local n = tonumber(ARGV[6])
if ARGV[9] == '1' then
  redis.call('HINCRBY', KEYS[2], 'g', 1)
  redis.call('EXPIRE', KEYS[2], ARGV[8])
end
local ok = ARGV[1] == '*' or fence_token(KEYS[2], 6, n) == ARGV[1]
local px = tonumber(ARGV[3])
if ok and ARGV[5] ~= '' then
  local ver = tonumber(ARGV[5])
  local floor = tonumber(redis.call('HGET', KEYS[2], 'v') or '-1')
  local old = env_version(redis.call('GET', KEYS[1]))
  if ver < floor or (old and old > ver) then
    ok = false
  elseif ver > floor then
    redis.call('HSET', KEYS[2], 'v', ver)
    redis.call('EXPIRE', KEYS[2], ARGV[8])
  end
end
if ok then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', px)
  for i = 6 + n, 5 + 2 * n do
    redis.call('SADD', KEYS[i], ARGV[7])
    if redis.call('PTTL', KEYS[i]) < px then redis.call('PEXPIRE', KEYS[i], px) end
  end
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end
wake_waiters(KEYS[4], KEYS[5], ok and '1' or '0')
if ok then return 1 end
return 0
"""

RELEASE = _LUA_COMMON + """
-- KEYS: lease, wake, waiters   ARGV: token.  A loader that failed: free the lease, wake the waiters (with '0').
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
wake_waiters(KEYS[2], KEYS[3], '0')
return 1
"""

INVALIDATE_KEY = _LUA_COMMON + """
-- KEYS: value, fence   ARGV: version (''), fence_ttl
-- Returns {1, deleted} applied, {0, 0} stale (the cache already holds this version or a newer one).
if ARGV[1] ~= '' then
  local ver = tonumber(ARGV[1])
  local old = env_version(redis.call('GET', KEYS[1]))
  if old and old >= ver then return {0, 0} end
  local floor = tonumber(redis.call('HGET', KEYS[2], 'v') or '-1')
  if ver > floor then redis.call('HSET', KEYS[2], 'v', ver) end
end
redis.call('HINCRBY', KEYS[2], 'g', 1)
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {1, redis.call('DEL', KEYS[1])}
"""

TAG_BUMP = """
-- KEYS: tag gen   ARGV: fence_ttl.  Fences every load in flight of every key carrying the tag.
local g = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return g
"""

TAG_DRAIN = """
-- KEYS: tag set   ARGV: value prefix, fence prefix, fence_ttl, batch.  Invalidates up to batch members.
local members = redis.call('SPOP', KEYS[1], tonumber(ARGV[4]))
for _, key in ipairs(members) do
  redis.call('HINCRBY', ARGV[2] .. key, 'g', 1)
  redis.call('EXPIRE', ARGV[2] .. key, ARGV[3])
  redis.call('DEL', ARGV[1] .. key)
end
return #members
"""


class LuaScript:
    """A script run by EVALSHA, loaded on first NOSCRIPT (after a restart or a SCRIPT FLUSH)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: redis.Redis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def run_async(self, client: redis.asyncio.Redis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]
        except redis.exceptions.NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]

    def queue(self, pipe: redis.client.Pipeline | redis.asyncio.client.Pipeline, keys: Sequence[Any],
              args: Sequence[Any]) -> None:
        """Adds the call to a pipeline; the pipeline's owner loads the script first (see `ensure_loaded`)."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)


acquire_script = LuaScript(ACQUIRE)
fence_script = LuaScript(FENCE)
write_script = LuaScript(WRITE)
release_script = LuaScript(RELEASE)
invalidate_key_script = LuaScript(INVALIDATE_KEY)
tag_bump_script = LuaScript(TAG_BUMP)
tag_drain_script = LuaScript(TAG_DRAIN)
ALL_SCRIPTS = (acquire_script, fence_script, write_script, release_script, invalidate_key_script,
               tag_bump_script, tag_drain_script)


def ensure_loaded(client: redis.Redis) -> None:
    """Loads every script (for pipelines, where a NOSCRIPT cannot be retried one call at a time)."""
    for script in ALL_SCRIPTS:
        client.script_load(script.source)


async def ensure_loaded_async(client: redis.asyncio.Redis) -> None:
    for script in ALL_SCRIPTS:
        await client.script_load(script.source)

