"""The tracking link: Redis tells this process, on a connection of its own, every key it changed or dropped.

The link is one RESP3 connection (``HELLO 3``) with ``CLIENT TRACKING ON BCAST PREFIX p ...``: for every key under
a local keyspace's prefix that any client writes, deletes, or that expires or is evicted, Redis pushes an
``invalidate`` message with the key's name; FLUSHDB/FLUSHALL push one with no key (drop everything). RESP3 on one
connection, not the RESP2 redirect to ``__redis__:invalidate``: with the redirect, tracking lives on a second
connection whose death (CLIENT KILL, a proxy's idle timeout) silences the pushes while the subscriber still looks
healthy; on one connection, a killed link is an end of file the next read sees. BCAST, not the default mode: the
default remembers which connection read which key, so every pooled read connection would need tracking; BCAST
needs only this one, at the cost of pushes for keys this process never read (dropping an absent key is a dict miss).

Nothing runs in the background: every local read first drains what has arrived on the socket (a ``poll`` with no
timeout, then non-blocking reads), so a push that reached this host before a read began is applied before that read
is answered, whatever threads or event loops the process runs, and no thread is started (fork-safe by
construction). Health is known, not assumed: the link is healthy only after its handshake, and it pings Redis every
`ping_interval` seconds (driven by reads); a ping unanswered for `lag_limit` seconds makes it unhealthy (the owner
drops every local copy and serves nothing local until the answer comes), an end of file or socket error closes it,
and a reconnection is tried at most every `retry_interval` seconds, from a read.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import hiredis

log = logging.getLogger("cachewarm.near")

LINK_NAME = "cachewarm-near"  # the link's name in CLIENT LIST


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """Where one Redis server listens and how to log in; built from a redis:// or rediss:// URL."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> ServerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"the near cache needs a redis:// or rediss:// url, not {parts.scheme}://")
        return cls(parts.hostname or "127.0.0.1", parts.port or 6379,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None, parts.scheme == "rediss")


def _command(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _is_pong(reply: object) -> bool:
    return reply == b"PONG"


def disjoint_prefixes(prefixes: Sequence[str]) -> list[str]:
    """The prefixes with none covering another (Redis refuses overlapping BCAST prefixes): a prefix of another
    one tracks its keys too."""
    kept: list[str] = []
    for prefix in sorted(set(prefixes), key=len):
        if not any(prefix.startswith(shorter) for shorter in kept):
            kept.append(prefix)
    return kept


class TrackingLink:
    """One process's tracking connection to one Redis server. Not thread-safe: its owner holds a lock."""

    def __init__(self, address: ServerAddress, prefixes: Sequence[str], *,
                 on_keys: Callable[[list[bytes]], None], on_reset: Callable[[], None],
                 ping_interval: float = 0.1, lag_limit: float = 0.25, connect_timeout: float = 0.5,
                 retry_interval: float = 1.0, health: tuple[tuple[str, ...], Callable[[object], bool]] | None = None
                 ) -> None:
        """health: the command sent as the ping and a judge of its answer (default PING, answered PONG); a
        cluster's links ask CLUSTER INFO and judge the cluster's epoch (near/cluster.py)."""
        self.address = address
        self.prefixes = disjoint_prefixes(prefixes)
        self._on_keys = on_keys
        self._on_reset = on_reset
        self.ping_interval = ping_interval
        self.lag_limit = lag_limit
        self.connect_timeout = connect_timeout
        self.retry_interval = retry_interval
        command, self._judge = health or (("PING",), _is_pong)
        self._health_command = _command(*command)
        self._sock: socket.socket | None = None
        self._poll: select.poll | None = None
        self._reader = hiredis.Reader()
        self._ping_sent = 0.0          # monotonic time of the unanswered ping; 0: none outstanding
        self._last_ping = 0.0
        self._next_attempt = 0.0
        self._lagging = False
        self.healthy = False
        self.resets = 0                # times every local copy was dropped for the link's sake
        self.invalidations = 0         # keys (or flushes) pushed by Redis
        self.refused = False           # the last health answer was judged wrong (a cluster that changed)

    # ---- the one call a read makes -----------------------------------------------------------------------------
    def check(self) -> bool:
        """Applies every push that has arrived, drives the health ping and reconnects when due; True when local
        copies may be served and kept."""
        sock = self._sock
        if sock is None:
            now = time.monotonic()
            if now < self._next_attempt:
                return False
            self._connect(now)
            return self.healthy
        assert self._poll is not None
        if (self._poll.poll(0) or (self.address.tls and self._tls_pending(sock))) and not self._drain(sock):
            return False
        now = time.monotonic()
        if self._ping_sent:
            if not self._lagging and now - self._ping_sent > self.lag_limit:
                self._lag()
            if now - self._ping_sent > max(self.connect_timeout, self.lag_limit * 10):
                self._broken("no answer to a ping")
                return False
        elif now - self._last_ping >= self.ping_interval:
            self._ping(sock, now)
        return self.healthy

    @property
    def disconnected(self) -> bool:
        return self._sock is None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = self._poll = None
        self.healthy = False

    def forget_connection(self) -> None:
        """In a forked child: drop the inherited connection (closing our copy of the socket; the parent's stays
        open) so that the next check opens the child's own."""
        self.close()
        self._reader = hiredis.Reader()
        self._ping_sent, self._lagging, self._next_attempt = 0.0, False, 0.0

    # ---- inside --------------------------------------------------------------------------------------------
    def _connect(self, now: float) -> None:
        self._next_attempt = now + self.retry_interval
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((self.address.host, self.address.port), timeout=self.connect_timeout)
            if self.address.tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.address.host)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = hiredis.Reader()
            hello = ["HELLO", "3"]
            if self.address.password is not None:
                hello += ["AUTH", self.address.username or "default", self.address.password]
            hello += ["SETNAME", LINK_NAME]
            tracking = ["CLIENT", "TRACKING", "ON", "BCAST"]
            for prefix in self.prefixes:
                tracking += ["PREFIX", prefix]
            sock.sendall(_command(*hello) + _command(*tracking) + self._health_command)
            replies: list[object] = []
            while len(replies) < 3:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("redis closed the connection during the handshake")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    if isinstance(reply, Exception):
                        raise ConnectionError(f"redis refused: {reply}")
                    if not isinstance(reply, hiredis.PushNotification):  # nothing is kept yet: nothing to drop
                        replies.append(reply)
            if not self._judge(replies[2]):
                self.refused = True
                raise ConnectionError("the server's health answer is not the expected one")
        except (OSError, ConnectionError) as exc:
            if sock is not None:  # a handshake that failed: closed now, not whenever the collector gets to it
                sock.close()
            log.warning("near cache: tracking link to %s:%s not available (%s); reading from redis",
                        self.address.host, self.address.port, exc)
            return
        sock.setblocking(False)
        poll = select.poll()
        poll.register(sock, select.POLLIN)
        self._sock, self._poll, self._reader = sock, poll, reader
        self._ping_sent, self._last_ping, self._lagging = 0.0, now, False
        self.healthy = True
        # Anything kept before this link existed was never tracked by it.
        self._on_reset()

    def _tls_pending(self, sock: socket.socket) -> bool:
        # TLS may hold decrypted bytes the socket no longer shows as readable.
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def _drain(self, sock: socket.socket) -> bool:
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    self._broken("redis closed the tracking connection")
                    return False
                self._reader.feed(data)
                if len(data) < 65536:
                    break
        except BlockingIOError:
            pass
        except OSError as exc:
            self._broken(f"socket error: {exc}")
            return False
        while (message := self._reader.gets()) is not False:
            self._handle(message)
        return True

    def _handle(self, message: object) -> None:
        if isinstance(message, hiredis.PushNotification):
            if len(message) >= 2 and message[0] == b"invalidate":
                keys = message[1]
                if keys is None:               # FLUSHDB / FLUSHALL: every key is gone
                    self.invalidations += 1
                    self._on_reset()
                else:
                    self.invalidations += len(keys)
                    self._on_keys(keys)
            return
        if isinstance(message, Exception):
            self._broken(f"redis answered with an error: {message}")
            return
        if not self._judge(message):
            self.refused = True
            self._broken("the server's health answer changed")
            return
        self._ping_sent = 0.0
        if self._lagging:
            self._lagging = False
            self.healthy = True

    def _ping(self, sock: socket.socket, now: float) -> None:
        try:
            sock.send(self._health_command)
        except OSError as exc:
            self._broken(f"socket error: {exc}")
            return
        self._ping_sent = self._last_ping = now

    def _lag(self) -> None:
        # The answer is late: pushes may be late too. Serve nothing local until it comes.
        self._lagging = True
        self.healthy = False
        self.resets += 1
        self._on_reset()

    def _broken(self, why: str) -> None:
        log.warning("near cache: tracking link to %s:%s lost (%s); local copies dropped",
                    self.address.host, self.address.port, why)
        self.close()
        self.resets += 1
        self._next_attempt = 0.0  # the next read tries to reconnect at once (then every retry_interval)
        self._on_reset()
