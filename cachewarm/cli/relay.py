"""`cachewarm relay`: moves the outbox's rows to the invalidation stream, as a process of its own.

The workers run the same relay in their sidecar when CACHEWARM_OUTBOX_URL is set; this command is for a deployment
that wants it elsewhere (or one more). Several relays at once are fine: each row is published once in the normal
case (row locks), at least once always.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import click

from ..errors import ConfigError
from ..outbox.dialects import OutboxDatabaseError
from ..outbox.metrics import RelayObserver
from ..outbox.relay import Relay
from ..settings import Settings


@click.command("relay")
@click.option("--url", default=None, help="The outbox database (default: CACHEWARM_OUTBOX_URL).")
@click.option("--once", is_flag=True, help="Relay the rows there are now, then exit.")
@click.option("--create-table", is_flag=True, help="Create cachewarm_outbox (and its NOTIFY trigger) if missing.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve the relay's metrics on CACHEWARM_METRICS_HOST:PORT/metrics.")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
def relay(url: str | None, once: bool, create_table: bool, metrics_port: int | None, loglevel: str) -> None:
    """Relay cachewarm_outbox rows to the stream cachewarm:invalidations until stopped (SIGTERM, Ctrl-C)."""
    logging.basicConfig(level=loglevel.upper(), format="[%(asctime)s: %(levelname)s/cachewarm-relay] %(message)s")
    settings = Settings.load()
    url = url or settings.outbox_url
    if not url:
        raise ConfigError("CACHEWARM_OUTBOX_URL: not set (the database holding cachewarm_outbox), nor --url given")
    settings = Settings.load(outbox_url=url)
    observer = RelayObserver()
    if metrics_port:
        from prometheus_client import start_http_server

        from ..outbox.metrics import prometheus_observer

        observer = prometheus_observer()
        start_http_server(metrics_port, addr=settings.metrics_host)
    worker = Relay(settings, observer=observer)
    try:
        if create_table:
            worker.create_table()
        if once:
            moved = worker.drain()
            click.echo(f"relayed {moved} row(s) from {worker.dialect.description}"
                       f" ({worker.published} published, {worker.dead_lettered} dead-lettered)")
            return
    except OutboxDatabaseError as exc:
        click.echo(f"cachewarm relay: database {worker.dialect.description}: {exc}", err=True)
        raise SystemExit(1) from None
    finally:
        if once:
            worker.close()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    logging.getLogger("cachewarm.outbox").info("relaying %s to cachewarm:invalidations", worker.dialect.description)
    worker.run(stop)
