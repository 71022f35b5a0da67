-- UNCLAIM (the end of a refresh batch on a Redis Cluster: its keys' claims, those of one node in one call,
-- node_calls.py). KEYS: claim keys.  Deletes each (one DEL per key: one command may not span slots). Returns 1.
for _, claim_key in ipairs(KEYS) do redis.call('DEL', claim_key) end
return 1
