-- Prepended to every script when it is loaded (scripts.py, beside lua/): the helpers the scripts share.
-- Redis's clock in whole milliseconds, read once per script (call it once and keep the result).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- What makes a member of a hot-set shard hot (popularity.py's hot_bound / is_hot are the Python twin): its decayed
-- read count strictly above the threshold at `now`, Redis's clock (now_ms()): its score above this bound. HOTSET
-- (the scan) and HOT_MEMBERS (an invalidation's hot keys) use it; metrics/cluster.py counts with the Python twin.
local function hot_bound(threshold, now, epoch, half_life_ms)
  return threshold * math.pow(2, (now - epoch) / half_life_ms)
end
local function is_hot(score, bound)
  return score ~= nil and score > bound
end
-- The version field of a value envelope (envelope.py: 13 digits expiry '|' 13 digits fetched '|' kind '|', then
-- version '|' ...: the version begins at byte 31). It began at byte 30 here until issue 12, so no script ever read
-- a held value's version (tests/redis_layer/test_fence_versions.py).
local function env_version(v)
  if not v then return nil end
  local bar = string.find(v, '|', 31, true)
  if not bar or bar == 31 then return nil end
  return tonumber(string.sub(v, 31, bar - 1))
end
-- Wakes the readers blocked (BLPOP) on a key's lease: one mark each ('1' written, '0' load again).
local function wake_waiters(wake_key, waiters_key, mark)
  local waiting = tonumber(redis.call('GET', waiters_key) or '0')
  if waiting > 0 then
    redis.call('DEL', waiters_key)
    for _ = 1, waiting do redis.call('RPUSH', wake_key, mark) end
    redis.call('PEXPIRE', wake_key, 10000)
  end
end
-- A key's fence token: its fence generation (tag invalidations bump the fences of the tags' members: keys.py).
-- '0' when the fence does not exist: a token never is '0' (take_fence_token), so a write fails closed when its
-- fence expired or was evicted after the token was taken.
local function fence_token(fence_key)
  return redis.call('HGET', fence_key, 'g') or '0'
end
-- A generation for a fence that does not exist (never made, expired, or evicted under maxmemory): Redis's clock in
-- microseconds, as a string, so that a fence made again never repeats a generation a load in flight may hold.
local function fresh_generation()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end
-- The token a load takes before its fetch; a missing fence is made first. Either way the fence is kept at least
-- keep_ms (about its value's life) from now: a fence that lapsed while the load is in flight would refuse its write.
local function take_fence_token(fence_key, keep_ms)
  local g = redis.call('HGET', fence_key, 'g')
  if not g then
    g = fresh_generation()
    redis.call('HSET', fence_key, 'g', g, 'u', g)
  end
  if redis.call('PTTL', fence_key) < keep_ms then redis.call('PEXPIRE', fence_key, keep_ms) end
  return g
end
-- Bumps a fence generation (fencing every load in flight of the key) and keeps the fence for fence_ttl. A bump
-- that names no version (`versioned` false: a tag's invalidation, one without a version), or that makes the fence
-- (what it held before is unknown), also sets u, the newest generation no version floor covers (see covered).
local function bump_fence(fence_key, fence_ttl, versioned)
  local g = fresh_generation()
  if redis.call('HSETNX', fence_key, 'g', g) == 0 then
    redis.call('HINCRBY', fence_key, 'g', 1)
    if not versioned then redis.call('HSET', fence_key, 'u', redis.call('HGET', fence_key, 'g')) end
  else
    redis.call('HSET', fence_key, 'u', g)
  end
  redis.call('HSET', fence_key, 'i', now_ms())  -- when an invalidation last applied (the auditor's "raced")
  redis.call('EXPIRE', fence_key, fence_ttl)
end
-- Stream entry ids ('ms-seq') compared as numbers of any length.
local function idparts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms or id, seq or '0'
end
local function numcmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
-- Whether a load whose fence token `expected` is no longer the fence's generation may still write a value of
-- version `ver`: only when every bump since its token named a version (u, the newest bump that did not, or the
-- fence's making, is not after the token) and none of those versions is newer than the value's (the floor v).
-- Such a value is at least as new as every change invalidated since the load began (issue 12: at a few events a
-- second per key, a refresh's 50 ms fetch was fenced by the next event even when it had fetched that event's
-- version or a newer one).
local function covered(fence_key, expected, ver)
  local f = redis.call('HMGET', fence_key, 'u', 'v')
  if not f[1] or numcmp(f[1], expected) > 0 then return false end
  return ver >= tonumber(f[2] or '-1')
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
-- A flat {field, value, ...} reply as a table.
local function kv(a)
  local t = {}
  for i = 1, #a, 2 do t[a[i]] = a[i + 1] end
  return t
end
