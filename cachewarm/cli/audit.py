"""`cachewarm audit [--keyspace S] [--keys N] [--json] [--repair]`: audits now and exits 1 when it found a cached
value the source has replaced (for a deploy pipeline). The same checks, grace window and causes as the workers'
continuous auditor (cachewarm/audit/, docs/AUDIT.md), within each keyspace's `rate`."""

from __future__ import annotations

import json

import click

from ..audit.oneshot import KeyspaceReport, audit_once
from .options import fail, load_settings


def render(reports: list[KeyspaceReport]) -> str:
    lines = []
    for report in reports:
        results = ", ".join(f"{n} {result}" for result, n in sorted(report.results.items())) or "nothing to check"
        lines.append(f"{report.keyspace}: {report.keys} key(s) recently read; {results}")
        lines += [f"  inconsistent: {f['key']} ({f['cause']}, value {f['age']:.1f} s old"
                  f"{', repaired' if f['repaired'] else ''})" for f in report.findings]
    found = sum(len(r.findings) for r in reports)
    lines.append(f"{found} inconsistency(ies) found" if found else "no inconsistency found")
    return "\n".join(lines)


@click.command("audit")
@click.option("--keyspace", "keyspace", metavar="S", help="Audit this keyspace only (default: every keyspace).")
@click.option("--keys", type=click.IntRange(min=1), default=100, show_default=True,
              help="Recently read keys audited per keyspace, at most.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")
@click.option("--repair", is_flag=True, help="Also invalidate (fenced) what was found stale, as the workers do.")
def audit(keyspace: str | None, keys: int, as_json: bool, repair: bool) -> None:
    """Compare recently read cached values with their sources now. Exit status 1 when a value the source has
    replaced stayed in the cache past the grace window, 2 on a configuration error."""
    settings = load_settings(require_keyspaces=True)
    if keyspace is not None and keyspace not in settings.load_keyspaces().names():
        fail(f"--keyspace: no keyspace {keyspace!r} (known: {', '.join(settings.load_keyspaces().names())})")
    reports = audit_once(settings, keyspace=keyspace, keys=keys, repair=repair)
    if as_json:
        click.echo(json.dumps({"keyspaces": {r.keyspace: {"keys": r.keys, "results": r.results,
                                                          "inconsistencies": r.findings} for r in reports},
                               "inconsistencies": sum(len(r.findings) for r in reports)}, indent=2))
    else:
        click.echo(render(reports))
    if any(r.findings for r in reports):
        raise SystemExit(1)
