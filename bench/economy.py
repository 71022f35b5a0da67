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
    parser.add_argument("--concurrency", type=int, default=256,
                        help="open loop: reader threads taking the arrivals (default 256, so that misses never hold "
                             "up the offered rate: 64 fell behind for classic on a loaded machine, 'late reads')")
    parser.add_argument("--baseline-warmup", type=float, default=30.0,
                        help="warm-up of the systems without workers (their only state is values living one TTL; "
                             "default 30 s, or --warmup when shorter)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a keyspace field of the cachewarm system (e.g. refresh_worth=0.03); repeatable")
    parser.add_argument("--variants", default="",
                        help="more cachewarm systems: 'threshold' (refresh_worth = 0: the hot threshold alone, the "
                             "policy before issue 27), 'worth=X' (refresh_worth = X), 'miss=X' (miss_cost = X)")
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
    if variant.startswith("miss="):
        return {"miss_cost": float(variant.removeprefix("miss="))}
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


GOAL_SIM_POINTS = 2.0     # the simulator's hit ratio within 2 points of the live one
GOAL_SIM_SOURCE = 0.10    # ... and its source req/s within 10 %
GOAL_REFERENCE_POINTS = 1.0  # a budgeted live hit ratio within 1 point of the true-rate reference's


def _simulated(result: Any, fields: dict[str, float], args: argparse.Namespace, *,
               oracle: bool) -> tuple[float, float, float]:
    """(hit %, hot hit %, source req/s) the simulator gives on the run's own reads up to the window's end."""
    from cachewarm.config.keyspaces import DEFAULT_REFRESH_WORTH
    from cachewarm.simulation.model import Params, simulate

    reads = [(started, f"product:{key}") for started, key, _ in result.log if started < result.window_end]
    reads.sort()
    t0 = reads[0][0]
    trace = [(t - t0, key) for t, key in reads]
    since = result.window_start - t0
    latency = result.worker.latency if result.worker.latency == result.worker.latency else args.latency
    params = Params(ttl=args.ttl, refresh_ahead=args.refresh_ahead, latency=latency,
                    refresh_worth=fields.get("refresh_worth", DEFAULT_REFRESH_WORTH),
                    miss_cost=fields.get("miss_cost", latency), refresh_budget=fields.get("refresh_budget"),
                    half_life=args.half_life, floor=args.threshold, scan_interval=0.25)
    hot = frozenset(f"product:{i}" for i in range(min(args.hot, args.keys)))
    rates: dict[str, float] | None = None
    if oracle:
        counts: dict[str, int] = {}
        for t, key in trace:
            if t >= since:
                counts[key] = counts.get(key, 0) + 1
        window = trace[-1][0] - since
        rates = {key: n / window for key, n in counts.items()}
    f = simulate(trace, params, since=since, hot=hot, oracle=rates)
    return f.hits / f.reads * 100, f.hot_hits / f.hot_reads * 100, f.source / f.seconds


def prediction_rows(results: Sequence[Any], args: argparse.Namespace) -> tuple[list[str], list[list[str]],
                                                                                  list[str]]:
    """The simulator against the live run, per cachewarm system, on the same reads; and the true-rate reference."""
    columns = ["system", "live hit%", "sim hit%", "diff pt", "live src/s", "sim src/s", "sim/live",
               "true-rate hit%", "live - true pt", "true-rate src/s", "measured latency ms", "goals sim,ref"]
    rows: list[list[str]] = []
    for r in results:
        fields = cachewarm_fields(r.name, args, results) if r.worker is not None else None
        if fields is None:
            continue
        live_hit = r.records.hit_ratio() * 100
        live_src = r.source_requests / r.window
        sim_hit, _, sim_src = _simulated(r, fields, args, oracle=False)
        ref_hit, _, ref_src = _simulated(r, fields, args, oracle=True)
        sim_ok = abs(sim_hit - live_hit) <= GOAL_SIM_POINTS and abs(sim_src / live_src - 1) <= GOAL_SIM_SOURCE
        ref_ok = "-" if "refresh_budget" not in fields else (
            "Y" if abs(live_hit - ref_hit) <= GOAL_REFERENCE_POINTS else "n")
        rows.append([r.name, f"{live_hit:.2f}", f"{sim_hit:.2f}", f"{sim_hit - live_hit:+.2f}", f"{live_src:,.1f}",
                     f"{sim_src:,.1f}", f"{sim_src / live_src:.3f}", f"{ref_hit:.2f}", f"{live_hit - ref_hit:+.2f}",
                     f"{ref_src:,.1f}", f"{r.worker.latency * 1000:.1f}",
                     f"{'Y' if sim_ok else 'n'} {ref_ok}"])
    notes = [f"sim: cachewarm.simulation.model on this run's own reads (same times and keys) up to the window's end, "
             f"figures over the window; goals: within {GOAL_SIM_POINTS:g} pt of the live hit ratio and "
             f"{GOAL_SIM_SOURCE * 100:g} % of its source req/s",
             "true-rate: the same model and settings with each key's true read rate over the window in place of its "
             f"decayed count; goal for the budgeted systems: live within {GOAL_REFERENCE_POINTS:g} pt of it"]
    return columns, rows, notes
