"""The economy figures of bench/hit_ratio.py (issue 27): what each system's hit ratio costs the source, against
classic cache-aside in the same run, and cachewarm's variants (the old threshold policy, refresh budgets as
multiples of classic's measured source load).

    python -m bench.hit_ratio --systems classic,cachewarm --variants threshold --budget-x 0.5,1,2

Goals at defaults (issue 27, open loop, 1,000 reads/s): source req/s <= 1.5x classic's, hit % all >= classic's
+ 8 points, hit % hot500 >= 99.9, wasted refreshes <= 30 %, learning misses per newly hot key <= 1.5.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

GOAL_SRC_X = 1.5
GOAL_HIT_POINTS = 8.0
GOAL_HOT = 99.9
GOAL_WASTED = 30.0
GOAL_LEARN = 1.5


def add_economy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--load", choices=("open", "closed"), default="open",
                        help="open (default): reads offered at --rate with Poisson arrivals, the same reads for "
                             "every system; closed: --threads readers as fast as they go (a faster system reads "
                             "more)")
    parser.add_argument("--rate", type=float, default=1000.0, help="open loop: reads/s offered (default 1000)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="open loop: reader threads taking the arrivals (default 64: misses never hold one up)")
    parser.add_argument("--baseline-warmup", type=float, default=30.0,
                        help="warm-up of the systems without workers (their only state is values living one TTL; "
                             "default 30 s, or --warmup when shorter)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a keyspace field of the cachewarm system (e.g. refresh_worth=0.03); repeatable")
    parser.add_argument("--variants", default="",
                        help="more cachewarm systems: 'threshold' (refresh_worth = 0: the hot threshold alone, the "
                             "policy before issue 27), 'worth=X' (refresh_worth = X)")
    parser.add_argument("--budget-x", default="",
                        help="cachewarm systems with refresh_budget = each multiple of classic's source req/s "
                             "in this run (e.g. 0.5,1,2; classic must run)")


def parse_fields(pairs: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        out[name.strip()] = float(value)
    return out


def variants(args: argparse.Namespace) -> list[str]:
    names = [f"cachewarm-{v.strip()}" for v in args.variants.split(",") if v.strip()]
    names += [f"cachewarm-budget-{x.strip()}x" for x in args.budget_x.split(",") if x.strip()]
    return names


def cachewarm_fields(name: str, args: argparse.Namespace, results: Sequence[Any]) -> dict[str, float] | None:
    """The keyspace fields of a cachewarm system (None: not a cachewarm system)."""
    if name == "cachewarm":
        return parse_fields(args.set)
    if not name.startswith("cachewarm-"):
        return None
    variant = name.removeprefix("cachewarm-")
    if variant == "threshold":
        return {"refresh_worth": 0.0}
    if variant.startswith("worth="):
        return {"refresh_worth": float(variant.removeprefix("worth="))}
    if variant.startswith("budget-"):
        classic = next((r for r in results if r.name == "classic"), None)
        if classic is None:
            raise SystemExit("--budget-x needs classic in --systems (it runs first)")
        factor = float(variant.removeprefix("budget-").removesuffix("x"))
        return {**parse_fields(args.set), "refresh_budget": round(factor * classic.source_requests / classic.window,
                                                                  2)}
    raise SystemExit(f"unknown variant {variant!r}")


def _pct(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"


def economy_rows(results: Sequence[Any], hot: int) -> tuple[list[str], list[list[str]], list[str]]:
    """(columns, rows, notes) of the economy table: per system, and its ratio to classic's in the same run."""
    base = next((r for r in results if r.name == "classic"), None)

    def figures(r: Any) -> dict[str, float]:
        src = r.source_requests / r.window
        reads = len(r.records) / r.window
        w = r.worker
        return {"hit": r.records.hit_ratio() * 100, "hot": r.records.hit_ratio(hot) * 100, "src": src,
                "per_read": src / reads if reads else float("nan"),
                "wasted": w.wasted / w.refreshed * 100 if w is not None and w.refreshed else float("nan"),
                "learn": r.learning.mean if r.learning is not None else float("nan"), "reads": reads,
                "late": r.records.late}

    ref = figures(base) if base is not None else None
    columns = ["system", "reads/s", "hit% all", "vs classic", f"hit% hot{hot}", "src req/s", "x classic",
               "src/read", "x classic", "wasted %", "learn miss", "x classic", "late reads", "goals"]
    rows: list[list[str]] = []
    for r in results:
        f = figures(r)
        goals = "-"
        if r.name == "cachewarm" and ref is not None:
            checks = [f["src"] <= GOAL_SRC_X * ref["src"], f["hit"] >= ref["hit"] + GOAL_HIT_POINTS,
                      f["hot"] >= GOAL_HOT, f["wasted"] <= GOAL_WASTED, f["learn"] <= GOAL_LEARN]
            goals = " ".join("Y" if ok else "n" for ok in checks)
        rows.append([
            r.name, f"{f['reads']:,.0f}", _pct(f["hit"]),
            "-" if ref is None else f"{f['hit'] - ref['hit']:+.1f} pt", _pct(f["hot"]), f"{f['src']:,.1f}",
            "-" if ref is None else f"{f['src'] / ref['src']:.2f}x", f"{f['per_read']:.3f}",
            "-" if ref is None else f"{f['per_read'] / ref['per_read']:.2f}x", _pct(f["wasted"]),
            "-" if f["learn"] != f["learn"] else f"{f['learn']:.2f}",
            "-" if ref is None or ref["learn"] != ref["learn"] else f"{f['learn'] / ref['learn']:.2f}x",
            str(f["late"]), goals])
    notes = [f"goals (cachewarm at defaults): src req/s <= {GOAL_SRC_X:g}x classic, hit% all >= classic + "
             f"{GOAL_HIT_POINTS:g} pt, hit% hot{hot} >= {GOAL_HOT:g}, wasted <= {GOAL_WASTED:g} %, learn miss <= "
             f"{GOAL_LEARN:g}",
             "late reads: open loop, reads that started more than 10 ms after their arrival (0: the offered rate "
             "held)"]
    return columns, rows, notes
