"""``lightning-cl``: LightningCLI with the task loop always on.

``lightning-cl fit -c configs/split_mnist/sequential.yaml`` trains every task in order; any
option can be overridden, e.g. ``--model.lambda_l1 0.1``, ``--seed_everything 3``,
``--data.scenario task``, ``--trainer.accelerator gpu``, ``--trainer.default_root_dir DIR``.

The DataModule is any :class:`~lightning_cl.data.TaskDataModule` (``data.class_path``), by
default :class:`~lightning_cl.data.SplitMNIST`; ``model.num_outputs`` follows from the data's
scenario and is not set by hand.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from jsonargparse import lazy_instance

from lightning_cl.classifier import ContinualClassifier
from lightning_cl.data.mnist_files import MNISTUnavailableError
from lightning_cl.data.split_mnist import SplitMNIST
from lightning_cl.data.task_data import TaskDataModule
from lightning_cl.task_loop import TaskLoop

TRAINER_DEFAULTS = {
    "accelerator": "cpu",  # the GPU is one flag away: --trainer.accelerator gpu
    "devices": 1,
    "max_epochs": -1,  # the task loop sets it: task_loop.epochs_per_task x number of tasks
    "reload_dataloaders_every_n_epochs": 1,  # the loaders follow the current task
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 50,
}
PROGRESS_BAR_REFRESH_RATE = 50  # redrawing every batch is a cost of every step of this small MLP


class ContinualCLI(LightningCLI):
    @staticmethod
    def task_loop_key() -> str:
        return "task_loop"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(TaskLoop, self.task_loop_key())
        # Configs without data.class_path (the notebook's) mean Split-MNIST.
        parser.set_defaults({"data": lazy_instance(SplitMNIST)})
        parser.link_arguments("data.num_outputs", "model.num_outputs", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        # Our classes validate their settings in __init__ and name the setting in the message:
        # show it like a parser error (no traceback), before anything is trained or written.
        try:
            super().instantiate_classes()
        except ValueError as err:
            self._parser(self.subcommand).error(str(err))

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(cb, ProgressBar) for cb in callbacks):
            callbacks.append(TQDMProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_RATE))
        if config.get("enable_checkpointing") is not False and not any(isinstance(cb, Checkpoint) for cb in callbacks):
            # One checkpoints/last.ckpt, rewritten (atomically) at every epoch end, after the task
            # loop has moved on at a task end: `--ckpt_path .../last.ckpt` resumes any interrupted run.
            callbacks.append(ModelCheckpoint(filename="last", save_on_train_epoch_end=True, enable_version_counter=False))
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)

    def before_fit(self) -> None:
        self._check_log_dir_writable()
        self._check_checkpoint_matches()
        self._check_checkpoint_data()
        if self.config_init[self.subcommand].get("weights_only") is None:
            # Our checkpoints hold tensors and plain data only: never unpickle code from one
            # (torch.load's own default only since torch 2.6).
            self.config_init[self.subcommand]["weights_only"] = True
        task_loop = self._get(self.config_init, self.task_loop_key())
        config = self.config[self.subcommand]
        task_loop.seed = config.get("seed_everything")
        task_loop.run_config = json.loads(self._parser(self.subcommand).dump(config, format="json", skip_none=False))


    def _check_log_dir_writable(self) -> None:
        """Refuse a log directory that cannot be written before anything is trained."""
        root = Path(self.trainer.default_root_dir)
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
        if getattr(self, "_checkpoint_checked", False) or ckpt_path is None or ckpt_path in ("last", "best", "hpc", "registry"):
            return
        self._checkpoint_checked = True
        error = self._parser(subcommand).error
        try:
            checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            error(f"ckpt_path={ckpt_path!r} does not exist.")
        except Exception as err:  # an unpickling error names what the file wanted to run
            error(f"ckpt_path={ckpt_path!r} cannot be loaded safely (weights_only): {type(err).__name__}: "
                  f"{str(err).strip().splitlines()[0]}")
        self._checkpoint = checkpoint
        saved = {f"model.{k}": v for k, v in checkpoint.get("hyper_parameters", {}).items()
                 if not k.startswith("_") and k != "num_outputs"}  # num_outputs follows from the data
        data_class = str(config.get("data.class_path", "")).rsplit(".", 1)[-1]
        data_state = checkpoint.get(data_class)
        if data_state is None:
            made_with = [k for k, v in checkpoint.items() if isinstance(v, dict) and "current_task" in v]
            error(f"ckpt_path={ckpt_path!r} was made with data {made_with or 'of another kind'}, not {data_class}. "
                  "Resume with the run's own config: -c lightning_logs/version_N/config.yaml.")
        saved["data.init_args.tasks"] = data_state.get("tasks") if config.get("data.init_args.tasks") else None
        saved["data.init_args.scenario"] = data_state.get("scenario")
        differences = [f"{key}: checkpoint {value!r}, config {config.get(key)!r}" for key, value in saved.items()
                       if value is not None and config.get(key) is not None and config.get(key) != value]
        if differences:
            differences = [d.replace("data.init_args.", "data.") for d in differences]
            error(f"ckpt_path={ckpt_path!r} was made with another config ({'; '.join(differences)}). "
                  "Resume with the run's own config: -c lightning_logs/version_N/config.yaml.")

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


def main(args: list[str] | None = None) -> None:
    try:
        run_cli(args)
    except (MNISTUnavailableError, FloatingPointError) as err:
        # Both are explained in their message; the results so far are in results.json.
        sys.exit(f"error: {err}")


def cli_kwargs() -> dict:
    """How ``lightning-cl`` builds its LightningCLI (the study's config resolver uses the same)."""
    return dict(
        model_class=ContinualClassifier,
        datamodule_class=TaskDataModule,
        subclass_mode_data=True,
        seed_everything_default=0,
        trainer_defaults=TRAINER_DEFAULTS,
        auto_configure_optimizers=False,  # the optimiser is model.optimizer / model.lr
    )


def run_cli(args: list[str] | None = None, run: bool = True) -> ContinualCLI:
    """The CLI on ``args``; ``run=False`` builds the trainer, model and data without a subcommand."""
    return ContinualCLI(**cli_kwargs(), args=args, run=run)
