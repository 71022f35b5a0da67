"""`cachewarm simulate`'s work: a trace, the keyspaces and candidate settings in; one row of figures per candidate
(and the true-rate reference of each) out.

A candidate is a list of overrides ``KEYSPACE.FIELD=VALUE`` of keyspace fields (refresh_worth, refresh_budget,
miss_cost, ttl, refresh_ahead, ...; validated as the keyspace file is) or of the settings the scan uses
(``hot_threshold``, ``hot_half_life``, ``scan_interval``, without a keyspace). Each keyspace is simulated on its
own reads; a sampled trace (header ``sample=``) is scaled back up: source requests / share, and a keyspace's
budget * share for the sampled keys.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..config.keyspaces import Keyspace, KeyspaceConfig, KeyspaceRegistry
from ..errors import ConfigError
from ..settings import Settings
from .model import Figures, Params, simulate
from .trace import Trace

SETTINGS_FIELDS = ("hot_threshold", "hot_half_life", "scan_interval")
DEFAULT_LATENCY = 0.05


@dataclass
class Row:
    name: str
    figures: Figures
    sample: float

    def as_dict(self) -> dict[str, float | str]:
        f, share = self.figures, self.sample
        seconds = f.seconds or float("nan")
        return {
            "candidate": self.name,
            "hit_ratio": f.hits / f.reads if f.reads else float("nan"),
            "hot_hit_ratio": f.hot_hits / f.hot_reads if f.hot_reads else float("nan"),
            "source_per_second": f.source / share / seconds,
            "refreshes_per_second": f.refreshes / share / seconds,
            "wasted": f.wasted / f.refreshes if f.refreshes else 0.0,
            "learning_misses": f.learn_misses / f.learn_keys if f.learn_keys else float("nan"),
            "left_out_per_second": f.left_out / share / seconds,
            "reads_per_second": f.reads / share / seconds,
        }


def parse_overrides(items: Sequence[str], registry: KeyspaceRegistry) -> list[list[tuple[str, str, str]]]:
    """Each ``--set`` is a candidate: ``KEYSPACE.FIELD=V[,V...]`` (several values: one candidate each; several
    overrides in one --set separated by ';' apply together). Returns candidates as (keyspace or '', field, value)."""
    out: list[list[tuple[str, str, str]]] = []
    for item in items:
        groups: list[list[tuple[str, str, str]]] = [[]]
        for part in filter(None, (p.strip() for p in item.split(";"))):
            target, sep, values = part.partition("=")
            space, dot, name = target.rpartition(".")
            if not sep or not values or not name:
                raise ConfigError(f"--set {part!r}: expected KEYSPACE.FIELD=VALUE (e.g. product.refresh_worth=0.05)"
                                  " or SETTING=VALUE for one of " + ", ".join(SETTINGS_FIELDS))
            if dot and space not in registry.names():
                raise ConfigError(f"--set {part!r}: no keyspace {space!r} (known: {', '.join(registry.names())})")
            if not dot and name not in SETTINGS_FIELDS:
                raise ConfigError(f"--set {part!r}: {name!r} is neither KEYSPACE.FIELD nor one of "
                                  + ", ".join(SETTINGS_FIELDS))
            if dot and name not in KeyspaceConfig.model_fields:
                raise ConfigError(f"--set {part!r}: keyspaces have no field {name!r}")
            groups = [[*group, (space, name, value)] for group in groups for value in values.split(",")]
        out += groups
    return out


def _params(ks: Keyspace, overrides: Sequence[tuple[str, str, str]], settings: Settings, latency: float,
            sample: float) -> Params:
    table = ks.config.model_dump(exclude_unset=True)
    table.update({"pattern": ks.config.pattern, "source": ks.config.source, "ttl": ks.config.ttl})
    globals_ = {"hot_threshold": settings.hot_threshold, "hot_half_life": settings.hot_half_life,
                "scan_interval": settings.scan_interval}
    for space, name, value in overrides:
        if space == ks.name:
            table[name] = value
        elif not space:
            globals_[name] = _number(name, value)
    try:
        cfg = KeyspaceConfig.model_validate(table)
    except Exception as exc:
        raise ConfigError(f"keyspaces.{ks.name} with {overrides}: {str(exc).splitlines()[-2:]}") from None
    budget = cfg.refresh_budget * sample if cfg.refresh_budget is not None else None
    return Params(ttl=cfg.ttl, refresh_ahead=cfg.refresh_ahead, latency=latency, refresh_worth=cfg.refresh_worth,
                  miss_cost=cfg.miss_cost if cfg.miss_cost is not None else latency, refresh_budget=budget,
                  half_life=globals_["hot_half_life"], floor=globals_["hot_threshold"],
                  scan_interval=globals_["scan_interval"])


def _number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"--set {name}={value}: not a number") from None
    if not number > 0:
        raise ConfigError(f"--set {name}={value}: must be > 0")
    return number


def split(trace: Trace, registry: KeyspaceRegistry) -> tuple[dict[str, list[tuple[float, str]]], int]:
    """The trace's reads per keyspace, and how many matched none."""
    per: dict[str, list[tuple[float, str]]] = {ks.name: [] for ks in registry}
    unknown = 0
    memo: dict[str, str | None] = {}
    for t, key in trace.reads:
        name = memo.get(key, "")
        if name == "":
            try:
                found = registry.find(key)
            except Exception:
                found = None
            name = memo[key] = found[0].name if found is not None else None
        if name is None:
            unknown += 1
        else:
            per[name].append((t, key))
    return per, unknown


def hottest(reads: Sequence[tuple[float, str]], since: float, n: int) -> tuple[frozenset[str], dict[str, float]]:
    """The n most read keys over the window, and every key's true read rate there."""
    counts = Counter(key for t, key in reads if t >= since)
    window = (reads[-1][0] - since) if reads and reads[-1][0] > since else 0.0
    rates = {key: count / window for key, count in counts.items()} if window > 0 else {}
    return frozenset(key for key, _ in counts.most_common(n)), rates


def run(trace: Trace, registry: KeyspaceRegistry, settings: Settings, candidates: Sequence[Sequence[tuple[str, str,
        str]]], *, warmup: float, hot: int, latency: Mapping[str, float] | None = None,
        reference: bool = True) -> list[Row]:
    """One row per candidate (and its true-rate reference after it)."""
    per, unknown = split(trace, registry)
    share = trace.info.sample
    rows: list[Row] = []
    hot_n = max(1, round(hot * share))
    picked = {name: hottest(reads, warmup, hot_n) for name, reads in per.items() if reads}
    for overrides in candidates:
        label = "; ".join(f"{s + '.' if s else ''}{n}={v}" for s, n, v in overrides) or "as configured"
        for oracle in ((False, True) if reference else (False,)):
            total = Figures(unknown=unknown)
            for ks in registry:
                reads = per.get(ks.name)
                if not reads:
                    continue
                lat = (latency or {}).get(ks.name, trace.info.latency.get(ks.name, DEFAULT_LATENCY))
                params = _params(ks, overrides, settings, lat, share)
                keys, rates = picked[ks.name]
                total.add(simulate(reads, params, since=warmup, hot=keys, oracle=rates if oracle else None))
            rows.append(Row(label + (" (true rates)" if oracle else ""), total, share))
    return rows
