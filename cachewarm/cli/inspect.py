"""`cachewarm inspect KEY [--json]`: everything Redis holds about one key, read in two round trips.

The value's header (never the value: GETRANGE), its Redis TTL, the fence (generation, version floor, and the last
refresh that wrote the value with its worker, recorded by lua/write.lua), the lease of a load in flight, the tags'
sets, the pin and the hot score judged by the one rule (redis_layer/popularity.is_hot). Exit status: 0 when a value
(or a remembered 404) is cached, 1 when none is (the rest is still shown), 2 when no keyspace pattern matches the
key or it cannot be a key.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from ..config.keyspaces import check_key
from ..redis_layer import envelope
from ..redis_layer.connections import sync_client
from ..redis_layer.keys import KeyLayout, shard_of
from ..redis_layer.popularity import decayed_reads, hot_bound, is_hot
from ..settings import Settings
from .options import fail, load_settings

NOT_CACHED = 1


def _text(raw: Any) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _seconds(ms: int | None) -> float | None:
    return None if ms is None or ms < 0 else ms / 1000


def gather(settings: Settings, key: str) -> dict[str, Any]:
    """What `inspect --json` prints; exits 2 for a key of no keyspace; raises redis.RedisError."""
    try:
        found = settings.load_keyspaces().find(check_key(key))
    except ValueError as exc:
        fail(f"cachewarm inspect: {exc}")
    if found is None:
        fail(f"cachewarm inspect: no keyspace pattern matches {key!r}")
    keyspace, params = found
    tags = list(keyspace.tags_for(params))
    layout = KeyLayout(settings.key_prefix)
    shard = shard_of(key)
    client = sync_client(settings.redis_url, timeout=max(settings.redis_timeout, 2.0), cluster=settings.redis_cluster)
    try:
        seconds, micros = client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        pipe = client.pipeline(transaction=False)
        pipe.getrange(layout.value(key), 0, envelope.HEAD - 1)
        pipe.strlen(layout.value(key))
        pipe.pttl(layout.value(key))
        pipe.hgetall(layout.fence(key))
        pipe.pttl(layout.fence(key))
        pipe.get(layout.lease(key))
        pipe.pttl(layout.lease(key))
        pipe.sismember(layout.pinned(keyspace.name), key)
        pipe.zscore(layout.hot(keyspace.name, shard), key)
        pipe.get(layout.hot_epoch(keyspace.name, shard))
        for tag in tags:
            pipe.zscore(layout.tag(tag), key)
        head, size, value_pttl, fence, fence_pttl, lease, lease_pttl, pinned, score, epoch, *enlisted = pipe.execute()
    finally:
        client.close()

    value: dict[str, Any] | None = None
    if head:
        h = envelope.header(head)
        value = {"kind": "value" if h.found else "negative", "version": h.version, "bytes": int(size),
                 "fetched_ms": h.fetched_ms, "age": (now_ms - h.fetched_ms) / 1000, "expires_ms": h.expires_ms,
                 "ttl_left": (h.expires_ms - now_ms) / 1000, "redis_ttl": _seconds(value_pttl)}
    fields: dict[str, str] = {_text(k) or "": _text(v) or "" for k, v in fence.items()}
    refresh: dict[str, Any] | None = None
    if fields.get("r"):
        at, _, by = fields["r"].partition("|")
        refresh = {"fetched_ms": int(at), "age": (now_ms - int(at)) / 1000, "by": by}
    holder = _text(lease)
    epoch_ms = float(epoch) if epoch is not None else float(now_ms)
    threshold, half_life = settings.hot_threshold, settings.hot_half_life
    return {
        "key": key, "keyspace": keyspace.name, "redis_time_ms": now_ms, "value": value,
        "fence": {"generation": fields.get("g"), "version_floor": int(fields["v"]) if fields.get("v") else None,
                  "redis_ttl": _seconds(fence_pttl)} if fields else None,
        "last_refresh": refresh,  # None: no refresh wrote the value since the fence was made (a reader's load)
        "lease": {"holder": holder.removeprefix("w=").partition("|")[0] if holder.startswith("w=") else "a reader",
                  "redis_ttl": _seconds(lease_pttl)} if holder else None,
        "tags": [{"tag": tag, "enlisted": score_ is not None} for tag, score_ in zip(tags, enlisted, strict=True)],
        "pinned": bool(pinned),
        "hot": {"decayed_reads": decayed_reads(float(score), now_ms, epoch_ms, half_life) if score is not None
                else 0.0, "threshold": threshold,
                "hot": is_hot(score, hot_bound(threshold, now_ms, epoch_ms, half_life)), "tracked": score is not None},
    }


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render(info: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [("key", f"{info['key']} (keyspace {info['keyspace']})")]
    value = info["value"]
    if value is None:
        rows.append(("value", "not cached"))
    else:
        kind = "value" if value["kind"] == "value" else "negative (the source said: no such item)"
        version = "-" if value["version"] is None else str(value["version"])
        left = value["ttl_left"]
        fresh = f"fresh for {left:.1f} s" if left > 0 else f"expired {-left:.1f} s ago (served only as stale)"
        redis_ttl = "none" if value["redis_ttl"] is None else f"{value['redis_ttl']:.1f} s"
        rows += [("value", f"{kind}, version {version}, {value['bytes']} bytes"),
                 ("fetched", f"{_when(value['fetched_ms'])} ({value['age']:.1f} s ago)"),
                 ("expires", f"{_when(value['expires_ms'])} ({fresh})"),
                 ("redis ttl", redis_ttl)]
    fence = info["fence"]
    if fence is None:
        rows.append(("fence", "none (never loaded or invalidated within its life)"))
    else:
        floor = "-" if fence["version_floor"] is None else str(fence["version_floor"])
        kept = "" if fence["redis_ttl"] is None else f", kept {fence['redis_ttl']:.1f} s"
        rows.append(("fence", f"generation {fence['generation']}, version floor {floor}{kept}"))
    refresh = info["last_refresh"]
    rows.append(("refreshed", f"{_when(refresh['fetched_ms'])} ({refresh['age']:.1f} s ago) by {refresh['by']}"
                 if refresh else "unknown (no worker's refresh recorded: loaded by a reader, or not cached)"))
    lease = info["lease"]
    rows.append(("loading", "no" if lease is None else f"now, by {lease['holder']}"))
    tags = ", ".join(f"{t['tag']} ({'enlisted' if t['enlisted'] else 'not enlisted'})" for t in info["tags"])
    rows.append(("tags", tags or "none"))
    rows.append(("pinned", "yes (refreshed as if hot)" if info["pinned"] else "no"))
    hot = info["hot"]
    rows.append(("hot", f"{'yes' if hot['hot'] else 'no'}: {hot['decayed_reads']:.2f} decayed reads "
                        f"(hot above {hot['threshold']:g})"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {text}" for name, text in rows)


@click.command("inspect")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of lines.")
def inspect(key: str, as_json: bool) -> None:
    """Show what Redis holds about KEY: the value's header (fetched, expires, kind, version), its Redis TTL, the
    fence, the last refresh and its worker, a load in flight, tags, pin and hot score.

    Exit status 0 when a value is cached, 1 when none is (the rest is still shown), 2 when no keyspace pattern
    matches KEY."""
    settings = load_settings(require_keyspaces=True)
    info = gather(settings, key)  # a Redis error: one line, exit 1 (cli/__init__.py)
    click.echo(json.dumps(info, indent=2) if as_json else render(info))
    if info["value"] is None:
        raise SystemExit(NOT_CACHED)

