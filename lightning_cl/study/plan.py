"""A study file and the runs it expands to.

A study file (YAML) names experiments; each has base configs (the ``-c`` list), optional
fixed ``overrides``, optional named ``variants`` (extra configs and overrides, e.g. one per
scenario) and an optional ``grid`` (every combination of the listed values). Every
experiment x variant x grid point runs once per seed::

    description: what this study is for
    seeds: [0, 1, 2]
    experiments:
      - name: ewc
        configs: [benchmarks/split_mnist.yaml, methods/ewc.yaml]
        variants:
          task: {overrides: {data.scenario: task}}
          class: {overrides: {data.scenario: class}}
        grid: {model.lr: [0.001, 0.0001]}
    executor: {jobs: 2}        # optional defaults for the command line's executor options
    select: {metric: val_acc, over: [model.lr]}  # optional: report only each grid's best point

``select`` chooses, per benchmark x scenario x method, the grid point with the best final
validation accuracy (held-out training images of every task, never the test set): the report
gives only its test numbers and lists the whole grid with its validation scores
(:mod:`lightning_cl.report.selection`). Every grid point still runs.

Config paths are relative to the study file's folder, else to the repository's ``configs/``.
A run is identified by a hash of its resolved config and seed (:func:`run_id`), where it
writes its files and the accelerator aside, so a run that finished is recognised whatever
study, name, order or accelerator produced it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_cl.settings import changes_results, flatten
from lightning_cl.study import CONFIG_DIR

STUDY_KEYS = {"description", "seeds", "experiments", "executor", "select"}
EXPERIMENT_KEYS = {"name", "configs", "overrides", "variants", "grid"}
VARIANT_KEYS = {"configs", "overrides"}
EXECUTOR_KEYS = {"executor", "jobs", "threads", "partition", "time", "gpus_per_job", "chunk_size", "jobs_per_gpu"}
# Placement settings (lightning_cl.settings) that the first run ids left out; the others, and the
# accelerator, are hashed at their defaults, so that the ids of runs made before stay the same.
LEFT_OUT_OF_RUN_IDS = ("ckpt_path", "trainer.default_root_dir", "trainer.enable_progress_bar", "data.init_args.data_dir",
                       "data.init_args.download")
# Settings added after run ids were first made, left out while at these values: a run that does
# not use them keeps the id it had before they existed.
ADDED_SINCE_RUN_IDS = {"model.network": None}
SEED_RANGE = range(2**32)  # what seed_everything accepts (numpy's seeds): 0 <= seed < 2**32


class StudyError(ValueError):
    """A study file that cannot be run; the message says where and why."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: its name, its command-line arguments (without the run directory),
    its seed and identity."""

    name: str
    args: tuple[str, ...]
    seed: int
    run_id: str

    def directory(self, root: Path) -> Path:
        return Path(root) / self.name / f"seed{self.seed}-{self.run_id}"


@dataclass
class Study:
    path: Path
    description: str
    seeds: list[int]
    experiments: list[dict[str, Any]]
    executor: dict[str, Any]
    select: tuple[str, tuple[str, ...]] | None = None  # (metric, settings selected over)


def _check_keys(where: str, given: dict, allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}.")


def load_study(path: str | Path) -> Study:
    """Read and check a study file (keys, config files, value types); nothing is run."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise StudyError(f"{path}: cannot be read ({err.strerror or err}).") from None
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML ({err}).") from None
    if not isinstance(data, dict):
        raise StudyError(f"{path}: a study file is a mapping with keys {', '.join(sorted(STUDY_KEYS))}.")
    _check_keys(str(path), data, STUDY_KEYS)
    experiments = data.get("experiments") or []
    if not isinstance(experiments, list) or not experiments:
        raise StudyError(f"{path}: 'experiments' must be a non-empty list.")
    names = set()
    for i, exp in enumerate(experiments):
        where = f"{path}: experiments[{i}]"
        if not isinstance(exp, dict) or "name" not in exp or "configs" not in exp:
            raise StudyError(f"{where} needs a 'name' and a list of 'configs'.")
        _check_keys(where, exp, EXPERIMENT_KEYS)
        if exp["name"] in names:
            raise StudyError(f"{where}: the name {exp['name']!r} is used twice.")
        names.add(exp["name"])
        for name, variant in (exp.get("variants") or {}).items():
            _check_keys(f"{where}.variants.{name}", variant or {}, VARIANT_KEYS)
        for key, values in (exp.get("grid") or {}).items():
            if not isinstance(values, list):
                raise StudyError(f"{where}.grid.{key} must be a list of values.")
        for config in list(exp["configs"]) + [c for v in (exp.get("variants") or {}).values()
                                              for c in (v or {}).get("configs", [])]:
            resolve_config(config, path)
    _check_keys(f"{path}: executor", data.get("executor") or {}, EXECUTOR_KEYS)
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise StudyError(f"{path}: 'seeds' must be a list of integers.")
    check_seeds(seeds, f"{path}: seeds")
    return Study(path, data.get("description", ""), seeds, experiments, dict(data.get("executor") or {}),
                 _check_select(data.get("select"), experiments, path))


def _check_select(select: Any, experiments: list[dict[str, Any]], path: Path) -> tuple[str, tuple[str, ...]] | None:
    """The study's ``select``, checked: a validation metric, and settings that some grid varies."""
    if select is None:
        return None
    # here, not at the top: a run started by the CLI reads this module and must not import the report
    from lightning_cl.report.selection import SelectionError, check_selection

    where = f"{path}: select"
    if not isinstance(select, dict):
        raise StudyError(f"{where} is a mapping, e.g. {{metric: val_acc, over: [trainer.callbacks.lam]}}.")
    _check_keys(where, select, {"metric", "over"})
    try:
        metric, over = check_selection(select.get("metric", "val_acc"), select.get("over"), where)
    except SelectionError as err:
        raise StudyError(str(err)) from None
    varied = {key for exp in experiments for key in (exp.get("grid") or {})}
    unvaried = [key for key in over if key not in varied]
    if unvaried:
        raise StudyError(f"{where}: no experiment's grid varies {', '.join(unvaried)}; select over settings that a "
                         f"grid lists ({', '.join(sorted(varied)) or 'none has a grid'}).")
    return metric, over


def check_seeds(seeds: list[int], where: str) -> None:
    bad = [s for s in seeds if s not in SEED_RANGE]
    if bad:
        raise StudyError(f"{where}: {', '.join(map(str, bad))} out of range: a seed is 0 <= seed < 2**32 "
                         "(numpy and torch).")


def resolve_config(config: str, study_path: Path) -> Path:
    for base in (study_path.parent, CONFIG_DIR):
        if (base / config).is_file():
            return (base / config).resolve()
    raise StudyError(f"{study_path}: config {config!r} does not exist (looked in {study_path.parent} and {CONFIG_DIR}).")


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def expand(study: Study, seeds: list[int] | None = None) -> list[tuple[str, list[str], int]]:
    """``(name, args, seed)`` of every run: experiments x variants x grid x seeds."""
    runs = []
    for exp in study.experiments:
        variants = exp.get("variants") or {"": {}}
        grid = exp.get("grid") or {}
        points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
        for (variant_name, variant), point in itertools.product(variants.items(), points):
            variant = variant or {}
            configs = [*exp["configs"], *variant.get("configs", [])]
            overrides = {**(exp.get("overrides") or {}), **variant.get("overrides", {}), **point}
            args = [a for c in configs for a in ("-c", str(resolve_config(c, study.path)))]
            args += [a for k, v in overrides.items() for a in (f"--{k}", _value(v))]
            name = "/".join(filter(None, [exp["name"], variant_name, _slug(",".join(f"{k}={_value(v)}"
                                                                                       for k, v in point.items()))]))
            for seed in seeds if seeds is not None else study.seeds:
                runs.append((name, args, seed))
    if not runs:
        raise StudyError(f"{study.path}: the study expands to no runs (an empty grid list, or no seeds).")
    return runs


class Resolver:
    """Resolves run arguments to the full config with the CLI's own parser (built once), which
    also rejects unknown settings and bad values before anything runs; :meth:`check` then builds
    what the run would build before training."""

    def __init__(self) -> None:
        from lightning_cl.cli import ContinualCLI, cli_kwargs

        class ParseOnly(ContinualCLI):
            def _set_seed(self) -> None:
                pass  # resolving sets no seed

            def instantiate_classes(self) -> None:
                pass

            def after_instantiate_classes(self) -> None:
                pass

        with _quiet():
            self.parser = ParseOnly(**cli_kwargs(), args=[], run=False).parser
        self.defaults = flatten(self._dump(self.parser.get_defaults()))
        self._check_cli = _check_only_cli(ContinualCLI, self.parser)

    def _dump(self, config) -> dict[str, Any]:
        return json.loads(self.parser.dump(config, format="json", skip_none=False))

    def spec(self, name: str, args: list[str], seed: int) -> RunSpec:
        full = [*args, "--seed_everything", str(seed)]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                config = self.parser.parse_args(full)
        except SystemExit:
            raise StudyError(_run_error(name, seed, full, err.getvalue())) from None
        return RunSpec(name, tuple(full), seed, run_id(self._dump(config), self.defaults))

    def check(self, spec: RunSpec) -> str | None:
        """Build the run's model, DataModule (its data is not loaded), callbacks and Trainer as
        ``lightning-cl fit`` builds them, with every check the CLI makes on the way; nothing is
        written, no seed is set. Returns the CLI's error lines, or None if the run can start."""
        from lightning_cl.cli import cli_kwargs

        import torch

        err = io.StringIO()
        environ = dict(os.environ)
        flags = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
        try:
            with _quiet(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                self._check_cli(**cli_kwargs(), args=list(spec.args), run=False)
        except SystemExit:
            return err.getvalue()
        except Exception as exc:  # noqa: BLE001 - what the run would have stopped with, named
            return f"error: {type(exc).__name__}: {str(exc).strip()}"
        finally:  # what building a Trainer sets in this process (the study's workers inherit its environment)
            os.environ.clear()
            os.environ.update(environ)
            torch.use_deterministic_algorithms(flags[0])
            torch.backends.cudnn.benchmark = flags[1]
        return None


def _check_only_cli(cli_class: type, parser):
    class CheckOnly(cli_class):
        """The CLI on one run's arguments up to its built Trainer, model and data, without a
        subcommand: so no run directory and no logger, and the seed is only checked."""

        def setup_parser(self, add_subcommands, main_kwargs, subparser_kwargs) -> None:
            self.parser = parser  # the resolver's: building a parser per run costs more than the check

        def _set_seed(self) -> None:
            pass  # parse_arguments has checked the seed (cli.seed_error); a check seeds nothing

        def instantiate_trainer(self, **kwargs):
            return super().instantiate_trainer(**kwargs, logger=False)

    return CheckOnly


@contextlib.contextmanager
def _quiet():
    """Lightning's information lines and warnings, which the run prints in its own log."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _run_error(name: str, seed: int | list[int], args: list[str] | tuple[str, ...], stderr: str) -> str:
    if isinstance(seed, int):
        seed = [seed]
    seeds = f"seed{'s' if len(seed) > 1 else ''} {', '.join(map(str, seed))}"
    message = [line for line in stderr.strip().splitlines()
               if line.strip() and not line.lstrip().startswith("[") and "usage:" not in line]
    return f"run {name} ({seeds}): {' '.join(args)}\n  " + "\n  ".join(message)


def run_id(resolved: dict[str, Any], defaults: dict[str, Any]) -> str:
    """A short hash of what decides a run's results: its resolved config (the seed included),
    with placement settings and the accelerator (:mod:`lightning_cl.settings`) put at their
    defaults (or, for :data:`LEFT_OUT_OF_RUN_IDS`, left out), so that a run moved to a GPU or
    to another data directory keeps its id.

    Args:
        resolved: the run's resolved config.
        defaults: the flattened resolved config of a run given no settings.
    """
    config = json.loads(json.dumps(resolved))
    for key, value in flatten(config).items():
        added_at_default = key in ADDED_SINCE_RUN_IDS and value == ADDED_SINCE_RUN_IDS[key]
        if changes_results(key) and not added_at_default:
            continue
        *parents, last = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        if added_at_default or key in LEFT_OUT_OF_RUN_IDS or key not in defaults:
            del node[last]
        else:
            node[last] = defaults[key]
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def plan(study: Study, seeds: list[int] | None = None, check: bool = True) -> list[RunSpec]:
    """Every run of ``study`` as a :class:`RunSpec`; raises :class:`StudyError` on any bad setting,
    and (``check``) on any run that would stop before training (:meth:`Resolver.check`), naming
    every such run."""
    if seeds is not None:
        check_seeds(seeds, "--seeds")
    resolver = Resolver()
    specs = [resolver.spec(name, args, seed) for name, args, seed in expand(study, seeds)]
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.run_id in seen:
            raise StudyError(f"runs {seen[spec.run_id]} and {spec.name} (seed {spec.seed}) are the same run "
                             "(identical resolved config and seed); remove one.")
        seen[spec.run_id] = f"{spec.name} (seed {spec.seed})"
    if check:
        errors = []
        by_settings: dict[tuple[str, tuple[str, ...]], list[RunSpec]] = {}
        for spec in specs:  # the seed changes no check: one check per run and its other seeds
            by_settings.setdefault((spec.name, spec.args[:-2]), []).append(spec)
        for (name, args), same in by_settings.items():
            error = resolver.check(same[0])
            if error is not None:
                errors.append(_run_error(name, [s.seed for s in same], args, error))
        if errors:
            lines = [line for error in errors for line in error.splitlines()]
            tips = list(dict.fromkeys(line.strip() for line in lines if line.strip().startswith("tip:")))
            raise StudyError(f"{len(errors)} run(s) would stop before training; nothing was run:\n"
                             + "\n".join(line for line in lines if not line.strip().startswith("tip:"))
                             + "".join(f"\n{tip}" for tip in tips))
    return specs
