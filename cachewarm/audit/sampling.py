"""Which keys the auditor looks at: those recently read, i.e. the members of the keyspace's hot-set shards
(``hot:{S#n}``, kept by every reader's flush and pruned of cold keys by the scan), each once per round in a
random order. A round ends when every member was handed out; the next reads the shards again. Auditing
without replacement is what lets a small budget cover a hot set: 200 keys at 5 requests/s are all looked at
within 40 s, where sampling with replacement would need about five times as long to see the last one."""

from __future__ import annotations

import random

import redis

from ..redis_layer.keys import HOT_SHARDS, KeyLayout

ROUND_MAX = 10_000  # keys of one round at most (the most read, when the hot set is larger)


def recent_keys(client: redis.Redis, layout: KeyLayout, keyspace: str, limit: int = ROUND_MAX) -> list[str]:
    """The keyspace's hot-set members, most read first, at most `limit` (one pipeline over the shards)."""
    pipe = client.pipeline(transaction=False)
    per_shard = max(1, -(-limit // HOT_SHARDS))
    for shard in range(HOT_SHARDS):
        pipe.zrange(layout.hot(keyspace, shard), 0, per_shard - 1, desc=True, withscores=True)
    scored: list[tuple[float, str]] = []
    for members in pipe.execute():
        scored += [(float(score), m.decode("utf-8", "surrogateescape")) for m, score in members]
    scored.sort(reverse=True)
    return [key for _, key in scored[:limit]]


class Sampler:
    """Hands out a keyspace's recently read keys, each once per round, shuffled."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, keyspace: str, *,
                 rng: random.Random | None = None) -> None:
        self.client, self.layout, self.keyspace = client, layout, keyspace
        self.rng = rng or random.Random()
        self._round: list[str] = []
        self.rounds = 0

    def next(self) -> str | None:
        """The next key to audit, or None when nothing was read recently. Raises redis.RedisError."""
        if not self._round:
            self._round = recent_keys(self.client, self.layout, self.keyspace)
            self.rng.shuffle(self._round)
            self.rounds += 1
        return self._round.pop() if self._round else None

    def push_back(self, key: str) -> None:
        """Returns a key handed out, to be handed out next."""
        self._round.append(key)

    def take(self, n: int) -> list[str]:
        """Up to `n` distinct keys of one round (`cachewarm audit`)."""
        keys = recent_keys(self.client, self.layout, self.keyspace)
        self.rng.shuffle(keys)
        return keys[:n]
