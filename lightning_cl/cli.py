"""``lightning-cl``: LightningCLI with the task loop always on.

``lightning-cl fit -c configs/split_mnist/sequential.yaml`` trains every task in order; any
option can be overridden, e.g. ``--model.lambda_l1 0.1``, ``--seed_everything 3``,
``--data.scenario task``, ``--trainer.accelerator gpu``, ``--trainer.default_root_dir DIR``.

The DataModule is any :class:`~lightning_cl.data.TaskDataModule` (``data.class_path``), by
default :class:`~lightning_cl.data.SplitMNIST`; ``model.num_outputs`` (from the data's
scenario) and ``model.input_size`` (from the benchmark) follow from the data and are not set
by hand. The network is the built-in MLP unless ``model.network`` names another
(:class:`~lightning_cl.classifier.ContinualClassifier`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, NoReturn

import torch
import yaml
from lightning.fabric.utilities.seed import max_seed_value, min_seed_value
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from jsonargparse import lazy_instance
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lightning_cl import quiet
from lightning_cl.atomic_write import DISK_FULL, WriteFailed, reason
from lightning_cl.callbacks import MOVED_TO_METHODS
from lightning_cl.checkpoint_io import AtomicCheckpointIO
from lightning_cl.classifier import ContinualClassifier
from lightning_cl.cli_errors import one_line_error
from lightning_cl.data.mnist_files import MNISTUnavailableError
from lightning_cl.data.split_mnist import SplitMNIST
from lightning_cl.data.task_data import TaskDataModule
from lightning_cl.methods.contract import ContractError
from lightning_cl.methods.method import Method, predicting_method
from lightning_cl.progress import TaskProgressBar
from lightning_cl.settings import overrides, resume_differences
from lightning_cl.task_loop import TaskLoop
from lightning_cl.trainer_checks import trainer_setting_errors

TRAINER_DEFAULTS = {
    "accelerator": "cpu",  # the GPU is one flag away: --trainer.accelerator gpu
    "devices": 1,
    "max_epochs": -1,  # the task loop sets it: task_loop.epochs_per_task x number of tasks
    "reload_dataloaders_every_n_epochs": 1,  # the loaders follow the current task
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 50,
}
PROGRESS_BAR_REFRESH_RATE = 50  # redrawing every batch is a cost of every step of this small MLP
PROG = "lightning-cl"
LOGS = "lightning_logs"
RUN_CONFIG_KEY = "lightning_cl_run_config"  # the resolved config, in every checkpoint: a resume is checked against it
MOVED_CLASS_PATH = re.compile(
    rf"lightning_cl\.callbacks\.(?:\w+\.)?(?P<name>{'|'.join(sorted(MOVED_TO_METHODS))})\b")
SIGTERM_EXIT_CODE = 128 + 15  # what a shell reports for a process ended by SIGTERM
CKPT_PATH_NAMES = ("last", "best", "hpc", "registry")  # --ckpt_path values that Lightning resolves, not files


def seed_error(seed: Any) -> str | None:
    """Why ``seed_everything`` cannot seed a run (Lightning, i.e. numpy, takes 0 to 2^32 - 1), or None."""
    if isinstance(seed, int) and not isinstance(seed, bool) and not min_seed_value <= seed <= max_seed_value:
        return (f"seed_everything={seed} is not a seed: give an integer from {min_seed_value} to {max_seed_value}, "
                "or true for a random one.")
    return None


class RunTerminated(Exception):
    """The run stopped on SIGTERM; the message says how to resume it."""


class RunWriteFailed(Exception):
    """A file of the run (a checkpoint, ``results.json``) could not be written, e.g. on a full disk;
    the message names it, the last complete checkpoint and how to resume."""


class ContinualArgumentParser(LightningArgumentParser):
    """Prints an error as one ``error:`` line and a pointer to ``--help``, not the whole usage: of
    jsonargparse's nested "Does not validate against any of the Union subtypes" dump, the reason
    (``JSONARGPARSE_DEBUG=true`` shows the dump)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        sys.stderr.write(f"error: {one_line_error(message)}\n"
                         f"tip: `{parser.prog.replace(' [options]', '')} --help` lists every option.\n")
        self.exit(2)


class RunConfigInCheckpoint(Callback):
    """Puts the run's resolved config into every checkpoint, so that a resume can be checked against it."""

    def __init__(self, run_config: dict[str, Any]) -> None:
        self.run_config = run_config

    def on_save_checkpoint(self, trainer: Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[RUN_CONFIG_KEY] = self.run_config


def claim_run_dir(logs: Path) -> int:
    """Create the next free ``logs/version_N`` and return N. ``mkdir`` is atomic: of runs started
    at the same moment, each gets its own directory (a loser tries the next number)."""
    logs.mkdir(parents=True, exist_ok=True)
    taken = [int(d.name[len("version_"):]) for d in logs.iterdir() if re.fullmatch(r"version_\d+", d.name)]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (logs / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1
        except FileNotFoundError:  # a failed run removed the empty lightning_logs meanwhile
            logs.mkdir(parents=True, exist_ok=True)


class ContinualCLI(LightningCLI):
    @staticmethod
    def task_loop_key() -> str:
        return "task_loop"

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # `test` and `predict` need test_step / predict_step, which the task loop replaces:
        # its evaluation after every task is the test (results.json).
        return {key: value for key, value in LightningCLI.subcommands().items() if key in ("fit", "validate")}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(TaskLoop, self.task_loop_key())
        # Configs without data.class_path (the notebook's) mean Split-MNIST.
        parser.set_defaults({"data": lazy_instance(SplitMNIST)})
        parser.link_arguments("data.num_outputs", "model.num_outputs", apply_on="instantiate")
        parser.link_arguments("data.input_size", "model.input_size", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        self._args = sys.argv[1:] if args is None else args  # for the run's overrides
        self._check_config_files_are_yaml(parser, self._args)
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if error := seed_error((self.config.get(subcommand) if subcommand else self.config).get("seed_everything")):
            self._parser(subcommand).error(error)  # Lightning would raise it with a traceback

    @staticmethod
    def _check_config_files_are_yaml(parser: LightningArgumentParser, args: Any) -> None:
        """Name the file of a YAML syntax error (jsonargparse reports ``<unicode string>``), and
        a class path that moved."""
        if not isinstance(args, (list, tuple)):
            return
        paths = [value for flag, value in zip(args, args[1:]) if flag in ("-c", "--config")]
        paths += [arg.partition("=")[2] for arg in args if isinstance(arg, str) and arg.startswith("--config=")]
        for path in paths:
            if not os.path.isfile(path):
                continue  # jsonargparse names a missing file
            try:
                with open(path) as file:
                    yaml.safe_load(file)  # from the file: a YAML error then names it, its line and column
                    file.seek(0)
                    text = file.read()
            except yaml.YAMLError as err:
                parser.error(f"-c {path} is not valid YAML: {err}")
            ContinualCLI._check_class_paths_moved(parser, text, f"-c {path}")
        for arg in args:
            if isinstance(arg, str):
                ContinualCLI._check_class_paths_moved(parser, arg, arg)

    @staticmethod
    def _check_class_paths_moved(parser: LightningArgumentParser, text: str, where: str) -> None:
        """A config written before the methods moved names ``lightning_cl.callbacks.<method>``:
        say in one line where the class is now (jsonargparse would bury it in a dump)."""
        for match in MOVED_CLASS_PATH.finditer(text):
            name = match.group("name")
            parser.error(f"{where}: {match.group(0)} is now lightning_cl.methods.{name}; write class_path: "
                         f"lightning_cl.methods.{name}.")

    def before_instantiate_classes(self) -> None:
        # Before any class is built or any directory created: Lightning would raise some of these
        # with a traceback after the run's directory exists, or change the setting silently.
        errors = trainer_setting_errors(self._get(self.config, "trainer"), TRAINER_DEFAULTS)
        if errors:
            self._parser(self.subcommand).error("\nerror: ".join(errors))

    def instantiate_classes(self) -> None:
        # Our classes validate their settings in __init__ and name the setting in the message:
        # show it like a parser error (no traceback), before anything is trained or written.
        # Lightning's own refusals of a Trainer setting (MisconfigurationException) likewise.
        try:
            super().instantiate_classes()
        except (ValueError, MisconfigurationException) as err:
            self._remove_empty_run_dir()
            self._parser(self.subcommand).error(str(err))
        except RuntimeError as err:
            twice = re.search(r"more than one stateful callback of type `(\w+)`", str(err))
            if twice is None:
                raise
            self._remove_empty_run_dir()
            self._parser(self.subcommand).error(
                f"trainer.callbacks lists {twice.group(1)} twice with the same settings: their states would be one. "
                "Remove one, or give them different settings.")

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        self.run_dir: Path | None = None
        if self.subcommand == "validate":
            # A validation prints its metrics; it writes no run directory (no config, no events).
            kwargs.setdefault("logger", False)
            self.save_config_callback = None
        elif self.subcommand == "fit" and config.get("logger") in (None, True) and rank_zero_only.rank == 0:
            # Claim the run's directory before anything is written (other processes of a DDP run
            # are told rank 0's directory by Lightning): TensorBoardLogger would pick its version
            # lazily, and runs started together would share one.
            logs = Path(self.trainer_default_root_dir(config)).absolute() / LOGS
            self._new_dirs = [d for d in (logs, *logs.parents) if not d.exists()]  # removed if left empty
            self._check_log_dir_writable()
            version = claim_run_dir(logs)
            self.run_dir = logs / f"version_{version}"
            # No placeholder hp_metric: the run logs its settings with its final metrics when it ends
            # (recorder.py), the one entry TensorBoard's HParams view then shows.
            kwargs["logger"] = TensorBoardLogger(save_dir=str(logs.parent), name=LOGS, version=version,
                                                 default_hp_metric=False)
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(cb, ProgressBar) for cb in callbacks):
            callbacks.append(TaskProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_RATE))  # names the task
        if config.get("enable_checkpointing") is not False and not any(isinstance(cb, Checkpoint) for cb in callbacks):
            # One checkpoints/last.ckpt, rewritten (atomically) at every epoch end, after the task
            # loop has moved on at a task end: `--ckpt_path .../last.ckpt` resumes any interrupted run.
            callbacks.append(ModelCheckpoint(filename="last", save_on_train_epoch_end=True, enable_version_counter=False))
        if self.subcommand == "fit":
            callbacks.append(RunConfigInCheckpoint(self._run_config()))
        # Checkpoints replace the file atomically in its own directory (checkpoint_io.py), unless
        # the config brings its own CheckpointIO.
        plugins = config.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        self.checkpoint_io = next((p for p in plugins if isinstance(p, CheckpointIO)), None)
        if self.checkpoint_io is None:
            self.checkpoint_io = AtomicCheckpointIO()
            plugins.append(self.checkpoint_io)
        kwargs["plugins"] = plugins
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)

    @staticmethod
    def trainer_default_root_dir(config: dict[str, Any]) -> str:
        return config.get("default_root_dir") or os.getcwd()

    def _run_config(self) -> dict[str, Any]:
        """The resolved config as plain data (as in config.yaml and results.json)."""
        config = self.config[self.subcommand]
        return json.loads(self._parser(self.subcommand).dump(config, format="json", skip_none=False))

    def _overrides(self) -> dict[str, Any] | None:
        """What the command line changed from its ``-c`` files' config (:func:`lightning_cl.settings.overrides`);
        None where that is not known (arguments given as a dict, ``-c`` files that do not parse alone)."""
        args = getattr(self, "_args", None)
        if not isinstance(args, (list, tuple)) or self.subcommand not in args:
            return None
        files = config_file_args(args[list(args).index(self.subcommand) + 1:])
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                own = self.parser.parse_args([self.subcommand, *files])[self.subcommand]
        except SystemExit:
            return None
        return overrides(json.loads(self._parser(self.subcommand).dump(own, format="json", skip_none=False)),
                         self._run_config())

    def before_fit(self) -> None:
        self._check_checkpoint_matches()
        self._check_checkpoint_data()
        self._check_methods_can_run()
        if self.config_init[self.subcommand].get("weights_only") is None:
            # Our checkpoints hold tensors and plain data only: never unpickle code from one
            # (torch.load's own default only since torch 2.6).
            self.config_init[self.subcommand]["weights_only"] = True
        task_loop = self._get(self.config_init, self.task_loop_key())
        task_loop.seed = self.config[self.subcommand].get("seed_everything")
        task_loop.run_config = self._run_config()
        task_loop.overrides = self._overrides()

    def fit(self, **kwargs: Any) -> None:
        try:
            self.trainer.fit(**kwargs)
        except ContractError as err:  # a callback's own check at setup, before any step
            self._remove_unstarted_run_dir()
            self._parser(self.subcommand).error(str(err))
        except SIGTERMException as err:
            # Lightning ends a SIGTERMed fit with exit status 0; a scheduler must see a failure.
            task_loop = self._get(self.config_init, self.task_loop_key())
            raise RunTerminated(task_loop.describe_exception(self.trainer, err)) from None
        except OSError as err:
            if not isinstance(err, WriteFailed) and err.errno not in DISK_FULL:
                raise
            raise RunWriteFailed(self._write_failure(err)) from None
        finally:
            self._remove_empty_run_dir()

    def _write_failure(self, err: OSError) -> str:
        """One line for a file the run could not write: which, the last complete checkpoint, how to go on."""
        log_dir = Path(self.trainer.log_dir or ".")
        chain = [err]  # the first failure: a logger that fails again while Lightning handles it comes later
        while isinstance(chain[-1].__context__, OSError):
            chain.append(chain[-1].__context__)
        first = next((e for e in reversed(chain) if isinstance(e, WriteFailed)), chain[-1])
        what = (str(first) if isinstance(first, WriteFailed) else f"{reason(first)} while writing {first.filename}"
                if first.filename else f"{reason(first)} while writing into {log_dir}")  # TensorBoard's names no file
        saved = getattr(getattr(self, "checkpoint_io", None), "last_saved", None)
        resumed_from = self.config[self.subcommand].get("ckpt_path")
        if saved is None and resumed_from not in (None, *CKPT_PATH_NAMES):
            saved = Path(resumed_from)  # nothing saved since the resume: the run's start is the last complete one
        config = log_dir / "config.yaml"
        room = "make room, then " if first.errno in DISK_FULL else ""
        if saved is None or not saved.is_file():
            again = f"start again with: {PROG} fit -c {config}" if config.is_file() else "start the run again"
            return f"{what}; no checkpoint was completed yet; {room}{again}"
        return (f"{what}; the last complete checkpoint is {saved}; {room}resume with: {PROG} fit -c {config} "
                f"--ckpt_path {saved}")

    def _check_methods_can_run(self) -> None:
        """Each method's setup check (the contract, settings that must fit the network, e.g. GPM's
        thresholds per layer) and that at most one declares a prediction rule, as an ``error:`` line,
        before the run's directory holds anything."""
        methods = [cb for cb in self.trainer.callbacks if isinstance(cb, Method)]
        for method in methods:
            try:
                method.check_setup(self.datamodule, self.model)
            except ValueError as err:
                self._remove_empty_run_dir()
                self._parser(self.subcommand).error(str(err))
        try:
            predicting_method(methods)  # at most one prediction rule (Method.predict)
        except ValueError as err:
            self._remove_empty_run_dir()
            self._parser(self.subcommand).error(str(err))

    def _remove_unstarted_run_dir(self) -> None:
        """A run that stopped at setup, before its first step, leaves no directory: only the
        TensorBoard file the logger opens at setup and the config are in it (no checkpoint, no results)."""
        run_dir = getattr(self, "run_dir", None)
        if run_dir is not None and run_dir.is_dir():
            files = list(run_dir.iterdir())
            if all(f.is_file() and (f.name.startswith("events.out.tfevents.") or f.name in ("config.yaml", "hparams.yaml"))
                   for f in files):
                for f in files:
                    f.unlink()
        self._remove_empty_run_dir()

    def _remove_empty_run_dir(self) -> None:
        """A run that stopped before writing anything leaves no empty directory."""
        run_dir = getattr(self, "run_dir", None)
        for directory in ([run_dir] if run_dir is not None else []) + getattr(self, "_new_dirs", []):
            try:
                directory.rmdir()  # only if empty
            except OSError:
                return

    def _check_log_dir_writable(self) -> None:
        """Refuse a log directory that cannot be written before anything is trained."""
        root = Path(self.trainer_default_root_dir(self._get(self.config_init, "trainer", default={})))
        try:
            root.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=root).close()
        except OSError as err:
            self._parser(self.subcommand).error(
                f"trainer.default_root_dir={str(root)!r} cannot be written ({err.strerror or err}); "
                "choose a writable directory with --trainer.default_root_dir DIR."
            )


    def _parse_ckpt_path(self) -> None:
        # LightningCLI replaces the model settings by the checkpoint's here: check first.
        self._check_checkpoint_matches()
        super()._parse_ckpt_path()

    def _check_checkpoint_matches(self) -> None:
        """Refuse, before training, a ``--ckpt_path`` that is missing, unsafe, or from another config."""
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if getattr(self, "_checkpoint_checked", False) or ckpt_path is None or ckpt_path in CKPT_PATH_NAMES:
            return
        self._checkpoint_checked = True
        error = self._parser(subcommand).error
        try:
            checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            error(f"ckpt_path={ckpt_path!r} does not exist.")
        except pickle.UnpicklingError as err:  # names what the file wanted to run
            error(f"ckpt_path={ckpt_path!r} cannot be loaded safely (weights_only): {type(err).__name__}: "
                  f"{str(err).strip().splitlines()[0]}")
        except Exception as err:  # truncated, overwritten, or not a checkpoint at all
            reason = (str(err).strip().splitlines() or ["unreadable"])[0].split(". ")[0]
            error(f"ckpt_path={ckpt_path!r} is corrupt or not a checkpoint ({type(err).__name__}: {reason}); "
                  "resume from another checkpoint, or start the run again without --ckpt_path.")
        if not isinstance(checkpoint, dict):
            error(f"ckpt_path={ckpt_path!r} is corrupt or not a checkpoint (it holds a {type(checkpoint).__name__}).")
        self._checkpoint = checkpoint
        saved = {f"model.{k}": v for k, v in checkpoint.get("hyper_parameters", {}).items()
                 if not k.startswith("_") and k not in ("num_outputs", "input_size")}  # these follow from the data
        data_class = str(config.get("data.class_path", "")).rsplit(".", 1)[-1]
        data_state = checkpoint.get(data_class)
        if data_state is None:
            made_with = [k for k, v in checkpoint.items() if isinstance(v, dict) and "current_task" in v]
            error(f"ckpt_path={ckpt_path!r} was made with data {made_with or 'of another kind'}, not {data_class}. "
                  "Resume with the run's own config: -c lightning_logs/version_N/config.yaml.")
        saved["data.init_args.tasks"] = data_state.get("tasks") if config.get("data.init_args.tasks") else None
        saved["data.init_args.scenario"] = data_state.get("scenario")
        differences = {key.replace("data.init_args.", "data."): f"checkpoint {value!r}, config {config.get(key)!r}"
                       for key, value in saved.items()
                       if value is not None and config.get(key) is not None and config.get(key) != value}
        run_dir = Path(ckpt_path).resolve().parent.parent
        if subcommand == "fit" and checkpoint.get(RUN_CONFIG_KEY) is not None:
            current = json.loads(self._parser(subcommand).dump(config, format="json", skip_none=False, skip_validation=True))
            differences |= resume_differences(checkpoint[RUN_CONFIG_KEY], current)
        if differences:
            own = run_dir / "config.yaml"
            error(f"ckpt_path={ckpt_path!r} was made with another config "
                  f"({'; '.join(f'{key}: {diff}' for key, diff in differences.items())}). Resume with the run's own "
                  f"config: -c {own if own.is_file() else 'lightning_logs/version_N/config.yaml'}.")
        task_loop = checkpoint.get("callbacks", {}).get(TaskLoop.__qualname__)
        tasks = data_state.get("tasks")
        if subcommand == "fit" and task_loop is not None and tasks and len(task_loop.get("epochs_used", [])) >= len(tasks):
            error(f"ckpt_path={ckpt_path!r} is the end of a finished run (task {len(tasks)} of {len(tasks)} trained): there is "
                  f"nothing to resume. Its results are in {run_dir / 'results.json'}; to train again, leave out "
                  "--ckpt_path.")

    def _check_checkpoint_data(self) -> None:
        """With the DataModule built: its task sequence must be the checkpoint's (angles, permutations...)."""
        checkpoint = getattr(self, "_checkpoint", None)
        if checkpoint is None:
            return
        datamodule: TaskDataModule = self.datamodule
        saved, mine = checkpoint.get(type(datamodule).__qualname__, {}), datamodule.state_dict()
        differences = [f"{key}: checkpoint {saved[key]!r}, config {mine[key]!r}" for key in ("tasks", "task_names", "scenario")
                       if key in saved and saved[key] != mine[key]]
        if differences:
            ckpt_path = self.config[self.subcommand].get("ckpt_path")
            self._parser(self.subcommand).error(
                f"ckpt_path={ckpt_path!r} was made with other tasks ({'; '.join(differences)}). "
                "Resume with the run's own config: -c lightning_logs/version_N/config.yaml.")


def config_file_args(args: Sequence[Any]) -> list[str]:
    """The ``-c`` / ``--config`` arguments of ``args``, in their order: ``["-c", "a.yaml", "--config=b.yaml"]``."""
    kept: list[str] = []
    for flag, value in zip(args, [*args[1:], None]):
        if flag in ("-c", "--config") and value is not None:
            kept += [flag, value]
        elif isinstance(flag, str) and flag.startswith("--config="):
            kept.append(flag)
    return kept


def _quiet_writer_threads(hook: Callable[[threading.ExceptHookArgs], Any]) -> Callable[[threading.ExceptHookArgs], Any]:
    """``hook`` (a ``threading.excepthook``), quiet about a full disk in TensorBoard's event writer
    thread: that prints it as a traceback and raises it again in the thread that logs next, where
    the run reports it in one line. Other threads print as usual."""
    def excepthook(args: threading.ExceptHookArgs) -> Any:
        if not (type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError)
                and args.exc_value.errno in DISK_FULL):
            return hook(args)

    excepthook.quiet_writer_threads = True
    return excepthook


def main(args: list[str] | None = None) -> None:
    if not getattr(threading.excepthook, "quiet_writer_threads", False):
        threading.excepthook = _quiet_writer_threads(threading.excepthook)
    quiet.install()  # Lightning's banners that say nothing about the run
    try:
        run_cli(args)
    except (MNISTUnavailableError, FloatingPointError) as err:
        # Both are explained in their message; the results so far are in results.json.
        sys.exit(f"error: {err}")
    except RunWriteFailed as err:
        sys.exit(f"error: {err}")  # the previous checkpoint and results.json are intact
    except RunTerminated as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(SIGTERM_EXIT_CODE)


def cli_kwargs() -> dict:
    """How ``lightning-cl`` builds its LightningCLI (the study's config resolver uses the same)."""
    return dict(
        model_class=ContinualClassifier,
        datamodule_class=TaskDataModule,
        subclass_mode_data=True,
        seed_everything_default=0,
        trainer_defaults=TRAINER_DEFAULTS,
        auto_configure_optimizers=False,  # the optimiser is model.optimizer / model.lr
        parser_class=ContinualArgumentParser,
        parser_kwargs={"prog": PROG},  # also under `python -m lightning_cl`
    )


def run_cli(args: list[str] | None = None, run: bool = True) -> ContinualCLI:
    """The CLI on ``args``; ``run=False`` builds the trainer, model and data without a subcommand."""
    return ContinualCLI(**cli_kwargs(), args=args, run=run)
