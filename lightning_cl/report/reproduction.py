"""The reproduction table: each (benchmark, scenario, method) of ours next to the number published
for the same protocol, with a verdict.

The published values are data (``published.yaml`` beside this file): each protocol names the
settings a run must have to count as a run of it, and each entry gives the value, spread and
number of seeds as printed, with the exact source (paper, table, row) it was read in. A group
of runs is compared with an entry when its benchmark, scenario and method are the entry's and
every run has all of the protocol's settings; a shortened or otherwise changed run is never
compared. The verdict is ``inside`` when our mean lies within the published value ± its
published spread, else ``outside`` with the difference; where the spread is a standard error and we
have several seeds, the verdict adds ``z``, the difference over the two means' standard errors
combined (``|z| < 2``: a gap the seeds alone could make). A value published without a spread
gets the difference and ``z`` on our standard error alone, which overstates the gap.

An entry may name ``settings`` the runs must also have (keys of
:func:`~lightning_cl.settings.grouping_settings`, e.g. a buffer size), and a protocol may take
its task-IL entries from the class-IL runs' task-IL accuracy (``task_il_from: class``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_cl.report.comparison import Group
from lightning_cl.settings import flatten, grouping_settings

PUBLISHED_FILE = Path(__file__).with_name("published.yaml")
ENTRY_KEYS = {"protocol", "scenario", "method", "settings", "value", "spread", "spread_kind", "seeds", "source", "note"}
SOURCE_KEYS = {"paper", "short", "table", "row", "url", "read_in"}


class PublishedError(ValueError):
    """A published-numbers file that cannot be used; the message names the entry and the problem."""


@dataclass(frozen=True)
class Protocol:
    name: str
    benchmark: str
    description: str
    settings: dict[str, Any]  # flattened keys of a run's resolved config and the values they must have
    scale: float  # published values are printed in this unit of ours (100: percent)
    # "class": the task-IL entries are compared with the task-IL accuracy that the class-IL runs
    # record (TaskILAccuracy), as the protocol's authors report both from one run
    task_il_from: str | None = None


@dataclass(frozen=True)
class Published:
    protocol: Protocol
    scenario: str
    method: str
    value: float  # as printed
    spread: float | None
    spread_kind: str  # e.g. "SEM", "std"
    seeds: int | None
    source: dict[str, str]
    note: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # grouping settings the runs must have (a buffer size)

    def cite(self) -> str:
        """Paper (its short name), table, row: the table's cell; :meth:`reference` says the rest."""
        paper = self.source.get("short") or self.source["paper"]
        return ", ".join(x for x in (paper, self.source["table"], self.source.get("row")) if x)

    def reference(self) -> str:
        """The full reference, and where the number was read when not in the paper itself."""
        parts = [self.source["paper"], self.source.get("url", "")]
        if self.source.get("read_in"):
            parts.append(f"read in {self.source['read_in']}")
        return "; ".join(p for p in parts if p)


def load_published(path: str | Path = PUBLISHED_FILE) -> list[Published]:
    """The entries of a published-numbers file, checked."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise PublishedError(f"{path}: cannot be read as published numbers ({err})") from None
    protocols = {}
    for name, p in (data.get("protocols") or {}).items():
        protocols[name] = Protocol(name, p["benchmark"], p.get("description", ""), dict(p.get("settings") or {}),
                                   float(p.get("scale", 1)), p.get("task_il_from"))
    entries = []
    for i, e in enumerate(data.get("entries") or []):
        where = f"{path}: entries[{i}]"
        unknown = set(e) - ENTRY_KEYS
        if unknown:
            raise PublishedError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        if e.get("protocol") not in protocols:
            raise PublishedError(f"{where}: protocol {e.get('protocol')!r} is not among {', '.join(protocols)}")
        source = e.get("source") or {}
        if not source.get("paper") or not source.get("table"):
            raise PublishedError(f"{where}: a published number needs its source's paper and table")
        entries.append(Published(protocols[e["protocol"]], e["scenario"], e["method"], float(e["value"]),
                                 None if e.get("spread") is None else float(e["spread"]), e.get("spread_kind", ""),
                                 e.get("seeds"), {k: str(v) for k, v in source.items() if k in SOURCE_KEYS},
                                 e.get("note", ""), dict(e.get("settings") or {})))
    return entries


def follows(group: Group, protocol: Protocol, settings: dict[str, Any] | None = None) -> bool:
    """Whether every run of ``group`` has all of the protocol's settings (keys of the flattened
    config) and all of ``settings`` (an entry's, keys of :func:`grouping_settings`: ``callbacks.DER.buffer_size``)."""
    if group.benchmark != protocol.benchmark:
        return False
    for run in group.runs:
        config = flatten(run.record.config or {})
        if any(json.dumps(config.get(k)) != json.dumps(v) for k, v in protocol.settings.items()):
            return False
        shown = grouping_settings(run.record.config) if settings else {}
        if any(json.dumps(shown.get(k)) != json.dumps(v) for k, v in (settings or {}).items()):
            return False
    return True


@dataclass
class Row:
    published: Published
    group: Group | None  # None: not run (or no run followed the protocol)
    task_il: bool = False  # ours is the task-IL accuracy of class-IL runs (Protocol.task_il_from)

    def ours(self) -> dict[str, float | None]:
        """Our ACC, mean and std over the group's seeds."""
        return self.group.stats("acc", task_il=self.task_il)

    def verdict(self) -> str:
        if self.group is None:
            return "not run"
        stats = self.ours()
        ours, std, n = stats["mean"], stats["std"], len(self.group.runs)
        if ours is None:
            return "no ACC"
        scale = self.published.protocol.scale
        diff = ours * scale - self.published.value
        if self.published.spread is None:
            verdict = f"no published spread ({diff:+.2f})"
            if std:  # the gap in our mean's standard error alone: the published mean's own is unknown
                verdict += f"; z {diff / (std * scale / math.sqrt(n)):+.1f} on our SEM alone"
            return verdict
        inside = abs(diff) <= self.published.spread
        verdict = "inside" if inside else f"outside ({diff:+.2f})"
        if self.published.spread_kind == "SEM" and std is not None:
            # the difference in standard errors of the two means together: |z| < 2 says the gap
            # could be the seeds' alone; a spread of a few seeds' std is itself rough
            z = diff / math.hypot(self.published.spread, std * scale / math.sqrt(n))
            verdict += f"; z {z:+.1f}"
        return verdict


def reproduction_rows(groups: Sequence[Group], published: Sequence[Published]) -> list[Row]:
    """One row per published entry whose protocol some group follows in the entry's scenario
    (``not run`` for its method if absent); a protocol none of the runs follows is left out, so
    that a report of another protocol's runs on the same benchmark does not list it as not run.
    Where the protocol takes task-IL from class-IL runs, a task-IL entry is compared with their
    task-IL accuracy."""
    followed = {(p.name, g.scenario) for p in {e.protocol.name: e.protocol for e in published}.values()
                for g in groups if follows(g, p)}
    rows = []
    for entry in published:
        task_il = entry.scenario == "task" and entry.protocol.task_il_from is not None
        scenario = entry.protocol.task_il_from if task_il else entry.scenario
        if (entry.protocol.name, scenario) not in followed:
            continue
        matching = [g for g in groups if (g.benchmark, g.scenario, g.method) ==
                    (entry.protocol.benchmark, scenario, entry.method) and follows(g, entry.protocol, entry.settings)
                    and (not task_il or g.has_task_il)]
        # several groups of one method (e.g. two projection forms): each gets its own row
        rows.extend([Row(entry, g, task_il) for g in matching] or [Row(entry, None, task_il)])
    return rows


def reproduction_table(rows: Sequence[Row]) -> list[str]:
    """The report's section."""
    if not rows:
        return []
    lines = ["## Reproduction: ours next to the published numbers", "",
             "Published: value ± spread as printed (its kind and seeds as the source states); ours: ACC mean ± std "
             "over seeds (n), in the published unit. Verdict: inside when our mean lies within the published "
             "value ± its spread. Only runs with every setting of the published protocol are compared.", ""]
    for protocol in {r.published.protocol.name: r.published.protocol for r in rows}.values():
        lines += [f"### {protocol.description or protocol.name}", "",
                  "| scenario | method | published | source | ours | verdict |", "| --- | --- | --- | --- | --- | --- |"]
        for row in (r for r in rows if r.published.protocol.name == protocol.name):
            p = row.published
            spread = f" ± {p.spread:g}" if p.spread is not None else ""
            kind = ", ".join(x for x in (p.spread_kind, f"{p.seeds} seeds" if p.seeds else "") if x)
            cell = f"{p.value:g}{spread}" + (f" ({kind})" if kind else "")
            ours = "—"
            if row.group is not None and (stats := row.ours())["mean"] is not None:
                mean, std = stats["mean"] * protocol.scale, stats["std"]
                ours = f"{mean:.2f}" + (f" ± {std * protocol.scale:.2f}" if std is not None else "") + f" (n={len(row.group.runs)})"
            label = row.group.label() if row.group is not None else p.method
            if row.task_il:
                label += ", task-IL of the class-IL runs"
            lines.append(f"| {p.scenario} | {label} | {cell} | {p.cite()} | {ours} | {row.verdict()} |")
        mine = [r for r in rows if r.published.protocol.name == protocol.name]
        notes = [f"- Sources: {ref}." for ref in dict.fromkeys(r.published.reference() for r in mine)]
        notes += list(dict.fromkeys(f"- {r.published.method}, {r.published.scenario}: {r.published.note}."
                                    for r in mine if r.published.note))
        lines += ["", *notes, ""]
    return lines
