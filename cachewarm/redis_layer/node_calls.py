"""Script calls of many keys on a Redis Cluster: one call per node instead of one per key (issue 29).

A script call's declared KEYS must share one slot on a Redis Cluster, so the calls that merge many keys on one Redis
(LEASE, WRITE, SEEN, INVALIDATE_KEY, the scan's DUE and CLAIM) were one call per key there: 9.45 script calls per
refreshed key against 1.23 on one Redis (BENCHMARKS.md). Redis 7 lets a script flagged ``allow-cross-slot-keys``
touch keys of several slots as long as all of them are on the node that runs it; such a script may not *declare*
keys of several slots, so a node's call passes its keys in ARGV: ``EVALSHA sha 0 <n keys> <stride> key... arg...``,
sent to the node owning the first key's slot (``Call.route``). `variant` builds that script from the same .lua file:
a prefix rebinds KEYS and ARGV from that ARGV, so the script's body is unchanged.

Every key is still named by the caller (script_calls.py builds them from the KeyLayout) and Redis checks each
command's keys against the user's ACL when it runs; only Redis's routing check is left out, and the prefix does it
instead: before anything runs it checks that the first key of every item (`stride` keys; an item's keys share a
slot) is on this node (an EXISTS under pcall) and else fails the whole call with NOT_HERE, having done nothing. The
caller then sends that call's items one call per key, as before, which redis-py routes afresh (MOVED, ASK): a slot
being moved or a failover costs a round trip, never a half-applied call. Keys whose structures do not share a slot
(a key starting with ``}``: keys.py) are left to one call each (`groupable`).

`CWBENCH_NODE_GROUPS=off` in the environment turns the grouping off (a bench's A/B switch; not a setting). A server
that cannot compile the variant (before Redis 7: no shebang) fails its first node call as a whole, nothing run; that
call's items are sent again one call each and the grouping is off for the process from then on.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import redis.exceptions
from redis.crc import key_slot

from .scripts import Call, Script, script

R = TypeVar("R")
log = logging.getLogger(__name__)

NOT_HERE = "CWNOTHERE"  # the error a node's call fails with when a key of it is not on that node (nothing ran)
_SHEBANG = "#!lua flags=allow-cross-slot-keys"
_UNPACK = f"""
local KEYS, ARGV = (function(a)
  local n, stride = tonumber(a[1]), tonumber(a[2])
  local keys, args = {{}}, {{}}
  for i = 3, n + 2 do keys[#keys + 1] = a[i] end
  for i = n + 3, #a do args[#args + 1] = a[i] end
  for i = 1, n, stride do
    if not pcall(redis.call, 'EXISTS', keys[i]) then error({{err = '{NOT_HERE} ' .. keys[i]}}) end
  end
  return keys, args
end)(ARGV)
"""
_VARIANTS: dict[str, Script] = {}


_unsupported: list[str] = []  # the error of a server that cannot run the per-node scripts (before Redis 7)


def enabled() -> bool:
    if _unsupported:
        return False
    return os.environ.get("CWBENCH_NODE_GROUPS", "on").strip().lower() not in ("off", "0", "no", "false")


def variant(name: str) -> Script:
    """lua/<name>.lua as a per-node script (its keys in ARGV, see the module's doc)."""
    found = _VARIANTS.get(name)
    if found is None:
        base = script(name)
        found = _VARIANTS[name] = Script(name + "@node", _SHEBANG + "\n" + _UNPACK + base.source)
    return found


def groupable(name: str | bytes) -> bool:
    """Whether an item whose first Redis key is `name` can join a node's call: its hash tag is not empty (a cache
    key starting with ``}``: its structures do not share a slot, keys.py)."""
    text = name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name
    at = text.find("{")
    return at < 0 or text[at + 1:at + 2] != "}"


def on_node(call: Call[R], stride: int) -> Call[R]:
    """`call` (its keys several items' of `stride` keys each, all on one node) as one call of the per-node
    variant of its script, routed by its first key."""
    if not call.keys:
        return call
    return Call(variant(call.script.name), (), [len(call.keys), stride, *call.keys, *call.args], call.decode,
                route=call.keys[0])


def not_here(reply: Any) -> bool:
    """Whether a node's call failed because a key of it was not on the node, or because the server cannot run
    the script (before Redis 7 a shebang does not compile; per-node calls are then off for this process):
    nothing ran, send its items again, one call each."""
    if not isinstance(reply, redis.exceptions.ResponseError):
        return False
    text = str(reply)
    if NOT_HERE in text:
        return True
    if "compiling script" in text or "shebang" in text.lower():
        if not _unsupported:
            _unsupported.append(text)
            log.warning("Redis cannot run cachewarm's per-node scripts (%s): one script call per key", text[:200])
        return True
    return False


@functools.lru_cache(maxsize=1 << 18)
def slot_of(name: str | bytes) -> int:
    """A Redis key's hash slot (a pure function of the name: cached, the scan asks it of every candidate)."""
    return int(key_slot(name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name))


def node_of(client: Any, key: str | bytes) -> str | None:
    """The name of the node owning the key's slot, by the client's slot map (None: no master covers it)."""
    try:
        node = client.nodes_manager.get_node_from_slot(slot_of(key))
    except redis.exceptions.SlotNotCoveredError:
        return None
    return None if node is None else str(node.name)


def by_node(client: Any, routes: Sequence[str | bytes]) -> dict[str | None, list[int]]:
    """Indexes of `routes` (one key per item) grouped by the node owning each key's slot."""
    groups: dict[str | None, list[int]] = {}
    owners: dict[int, str | None] = {}
    for i, key in enumerate(routes):
        slot = slot_of(key)
        if slot not in owners:
            try:
                node = client.nodes_manager.get_node_from_slot(slot)
                owners[slot] = None if node is None else str(node.name)
            except redis.exceptions.SlotNotCoveredError:
                owners[slot] = None
        groups.setdefault(owners[slot], []).append(i)
    return groups
