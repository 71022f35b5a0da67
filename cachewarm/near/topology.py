"""Where the near cache's tracking links go when the cache is not one fixed server: a Redis Cluster's masters,
or the master Redis Sentinel names. Each `Discovery` returns the servers to link to and the health check each link
pings with; a link whose check fails, or that cannot reach its server, makes the near cache drop every copy and
discover again (near/cache.py).

Redis Cluster: one tracking link per master, and a watch on the cluster's layout.

Tracking is per node: a master pushes changes of the keys it holds, so a process keeps one link to every master.
The masters are read from CLUSTER SLOTS; each link's health ping is CLUSTER INFO, judged by the cluster's current
epoch, which every failover and every slot moved to another master raises. A link whose node answers another epoch
(or says the cluster is not ok) is refused: the near cache drops every copy, reads the layout again and opens new
links; until they are healthy, nothing local is served. So a copy is never served from a layout older than one
ping interval plus the lag limit.

Sentinel: one link to the master the sentinels name; its health ping is ROLE, which must answer "master". A master
demoted by a failover (it comes back as a replica) or unreachable sends the near cache back to the sentinels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import redis
import redis.sentinel

from ..redis_layer import sentinel
from .link import ServerAddress

Health = tuple[tuple[str, ...], Callable[[object], bool]]
Discovery = Callable[[], tuple[list[ServerAddress], Health]]

_EPOCH = re.compile(rb"cluster_current_epoch:(\d+)")
_STATE_OK = b"cluster_state:ok"


def epoch_of(info: object) -> int | None:
    """The current epoch in a CLUSTER INFO answer, or None when the cluster is not ok."""
    if not isinstance(info, bytes) or _STATE_OK not in info:
        return None
    found = _EPOCH.search(info)
    return int(found.group(1)) if found else None


def same_epoch(epoch: int) -> Callable[[object], bool]:
    """The judge of a link's health answer: the cluster is ok and its layout is the one the links were made for."""
    return lambda info: epoch_of(info) == epoch


def discover(candidates: Iterable[ServerAddress], timeout: float) -> tuple[list[ServerAddress], int]:
    """The masters of the cluster (from the first candidate node that answers) and its current epoch.

    Raises redis.RedisError when no candidate answers or the cluster is not ok."""
    last: Exception = redis.ConnectionError("no cluster node to ask")
    for node in candidates:
        client = redis.Redis(host=node.host, port=node.port, username=node.username, password=node.password,
                             ssl=node.tls, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            epoch = epoch_of(client.execute_command("CLUSTER", "INFO"))  # type: ignore[no-untyped-call]
            slots = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            last = exc
            continue
        finally:
            client.close()
        if epoch is None:
            last = redis.ConnectionError("the cluster is not ok")
            continue
        masters: dict[tuple[str, int], ServerAddress] = {}
        for entry in slots:
            host, port = entry[2][0], int(entry[2][1])
            host = host.decode() if isinstance(host, bytes) else str(host)
            masters[(host or node.host, port)] = ServerAddress(host or node.host, port, node.username,
                                                               node.password, node.tls)
        return sorted(masters.values(), key=lambda a: (a.host, a.port)), epoch
    raise last


def cluster_discovery(seed: ServerAddress, timeout: float) -> Discovery:
    """The masters of the cluster seed belongs to (asked of the seed, then of the masters last seen)."""
    known: list[ServerAddress] = []

    def discover_now() -> tuple[list[ServerAddress], Health]:
        masters, epoch = discover([seed, *known], timeout)
        known[:] = masters
        return masters, (("CLUSTER", "INFO"), same_epoch(epoch))

    return discover_now


def _is_master(reply: object) -> bool:
    return isinstance(reply, list) and bool(reply) and reply[0] == b"master"


def sentinel_discovery(url: str, timeout: float) -> Discovery:
    """The master a redis+sentinel:// URL's sentinels name now."""
    parts = sentinel.parse(url)
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}

    def discover_now() -> tuple[list[ServerAddress], Health]:
        asker = redis.sentinel.Sentinel(list(parts.sentinels), sentinel_kwargs=options)  # type: ignore[no-untyped-call]
        try:
            host, port = asker.discover_master(parts.master)  # type: ignore[no-untyped-call]
        except redis.sentinel.MasterNotFoundError as exc:
            raise redis.ConnectionError(str(exc)) from None
        finally:
            for client in asker.sentinels:
                client.close()
        return [ServerAddress(str(host), int(port), parts.username, parts.password)], (("ROLE",), _is_master)

    return discover_now
