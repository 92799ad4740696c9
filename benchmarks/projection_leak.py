"""GPM's and OGD's leak per task, from the runs of a study (``configs/studies/projection_leak.yaml``
or the methods studies): the share of each update that lands inside the span the method protects
(``<method>/leak`` in ``results.json``'s ``method_metrics``: norm of the update inside the span /
norm of the update, over the task's steps), in every projection form the runs used.

    python benchmarks/projection_leak.py lightning_logs/studies/gpm lightning_logs/studies/ogd

Prints one row per complete run: method, scenario, projection form, seed, and the leak after each task
(none after the first task: there is no span yet), then the final ACC.
"""

from __future__ import annotations

import argparse

from lightning_cl.report.comparison import load_runs
from lightning_cl.settings import grouping_settings


def rows(dirs: list[str]) -> list[list[str]]:
    runs, problems = load_runs(dirs)
    for problem in problems:
        print(f"warning: skipped {problem}")
    table = []
    for run in sorted(runs, key=lambda r: (r.record.method, r.record.scenario, str(r.path))):
        rec = run.record
        if not rec.complete:
            continue
        leaks = {k: v for k, v in rec.method_metrics.items() if k.endswith("/leak")}
        if not leaks:
            continue
        settings = grouping_settings(rec.config)
        form = next((v for k, v in settings.items() if k.endswith(".project")), "?")
        for key, values in leaks.items():
            cells = ["—" if v is None else f"{v:.2e}" for v in values]
            acc = rec.metrics()["acc"]
            table.append([key.split("/")[0], rec.scenario, str(form), str(rec.seed), *cells,
                          "—" if acc is None else f"{acc:.4f}"])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="run directories or folders above them")
    table = rows(parser.parse_args().dirs)
    if not table:
        print("no run recorded a leak (GPM or OGD runs of lightning-cl with method_metrics)")
        return
    tasks = max(len(r) for r in table) - 5
    print("| method | scenario | project | seed | " + " | ".join(f"leak task {t + 1}" for t in range(tasks)) + " | ACC |")
    print("|" + " --- |" * (tasks + 5))
    for r in table:
        print("| " + " | ".join(r[:4] + r[4:-1] + ["—"] * (tasks - len(r[4:-1])) + r[-1:]) + " |")


if __name__ == "__main__":
    main()
