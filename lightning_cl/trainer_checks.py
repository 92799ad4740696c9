"""The Trainer settings lightning-cl cannot honour, refused before anything is trained or written.

Each check names the setting the way it is written on the command line, says why, and what
to use instead. The task loop owns the epoch budget, the module optimises by hand (one step
per batch), and gradient-projection methods need float32 gradients: a setting that would be
silently ignored or changed (``16-mixed`` on the CPU runs bfloat16), or that Lightning would
reject with a traceback after the run's directory exists, is refused here; so are more CPU
processes than the run's CPU cores, unless a strategy is named explicitly
(``--trainer.strategy ddp``): that is how to ask for them (to test DDP on a laptop).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

import torch

from lightning_cl.methods.method import Method

REDUCED_PRECISION = ("16", "bf16", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "transformer-engine")


def _callback_class(callback: Any) -> type | None:
    """The class of a callback given as an object or as a ``class_path`` config."""
    class_path = callback.get("class_path") if isinstance(callback, Mapping) or hasattr(callback, "get") else None
    if class_path is None:
        return type(callback)
    module, _, name = str(class_path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None  # the parser has already named an unknown class


def _gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity: a scheduler's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _on_cpu(accelerator: Any) -> bool:
    """Whether the run trains on the CPU: asked for, or ``auto`` where there is no GPU (nor MPS)."""
    if accelerator == "cpu":
        return True
    return accelerator in (None, "auto") and _gpu_count() == 0 and not torch.backends.mps.is_available()


def _requested_devices(devices: Any) -> int | None:
    """How many devices ``trainer.devices`` asks for (None: 'auto' or -1, i.e. all there are)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        devices = devices.strip()
        if devices in ("auto", "-1"):
            return None
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        try:
            devices = int(devices)
        except ValueError:
            return None
    return None if devices == -1 else devices


def trainer_setting_errors(trainer: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """Every Trainer setting in ``trainer`` (the parsed ``trainer`` config) lightning-cl cannot honour.

    Args:
        trainer: the ``trainer`` section of the parsed config (callbacks as ``class_path`` configs).
        defaults: lightning-cl's Trainer defaults (``cli.TRAINER_DEFAULTS``).

    Returns:
        One message per refused setting, each starting with ``trainer.<setting>``.
    """
    errors = []
    get = trainer.get

    if get("max_epochs") not in (None, defaults.get("max_epochs")):
        errors.append(f"trainer.max_epochs={get('max_epochs')} is set by the task loop (task_loop.epochs_per_task "
                      "x the number of tasks); use --task_loop.epochs_per_task N instead.")
    if get("min_epochs") is not None:
        errors.append(f"trainer.min_epochs={get('min_epochs')} cannot be honoured: the task loop decides when each "
                      "task ends; use --task_loop.epochs_per_task N instead.")
    if get("max_steps") not in (None, -1):
        errors.append(f"trainer.max_steps={get('max_steps')} would stop the run in the middle of a task; shorten "
                      "each epoch with --trainer.limit_train_batches N, or use --task_loop.epochs_per_task N.")
    if get("min_steps") is not None:
        errors.append(f"trainer.min_steps={get('min_steps')} cannot be honoured: the task loop decides when each "
                      "task ends; use --task_loop.epochs_per_task N instead.")
    if get("max_time") is not None:
        errors.append(f"trainer.max_time={get('max_time')!r} would end the run in the middle of a task with exit "
                      "status 0; leave time limits to the scheduler (a terminated run can be resumed from its "
                      "checkpoints/last.ckpt).")
    if get("reload_dataloaders_every_n_epochs") not in (None, 1):
        errors.append(f"trainer.reload_dataloaders_every_n_epochs={get('reload_dataloaders_every_n_epochs')} "
                      "must be 1: the loaders follow the current task, so they are reloaded every epoch.")

    if get("accumulate_grad_batches") not in (None, 1):
        errors.append(f"trainer.accumulate_grad_batches={get('accumulate_grad_batches')} is not supported: the model "
                      "takes one optimiser step per batch (manual optimisation, which gradient methods such as "
                      "OGD rely on); use a larger --data.batch_size instead.")
    if get("gradient_clip_val") not in (None, 0, 0.0):
        errors.append(f"trainer.gradient_clip_val={get('gradient_clip_val')} is not supported: the model optimises "
                      "manually, so Lightning would not clip; to take smaller steps use a smaller --model.lr.")
    if get("gradient_clip_algorithm") is not None:
        errors.append(f"trainer.gradient_clip_algorithm={get('gradient_clip_algorithm')!r} is not supported "
                      "(no gradient clipping); leave it unset.")

    accelerator = get("accelerator")
    gpus = _gpu_count()
    if isinstance(accelerator, str):
        if accelerator in ("gpu", "cuda") and gpus == 0:
            errors.append(f"trainer.accelerator={accelerator!r}: no GPU is visible (torch.cuda.is_available() is "
                          "False); use --trainer.accelerator cpu.")
        elif accelerator == "mps" and not torch.backends.mps.is_available():
            errors.append("trainer.accelerator='mps': MPS is not available on this machine; "
                          "use --trainer.accelerator cpu.")
        elif accelerator not in ("cpu", "gpu", "cuda", "mps", "auto"):
            errors.append(f"trainer.accelerator={accelerator!r} is not supported; use cpu or gpu.")
        requested = _requested_devices(get("devices"))
        if accelerator in ("gpu", "cuda") and gpus > 0 and requested is not None and requested > gpus:
            errors.append(f"trainer.devices={get('devices')!r} asks for {requested} GPUs but {gpus} "
                          f"{'is' if gpus == 1 else 'are'} visible; use --trainer.devices {gpus} or fewer.")

    # On the CPU, trainer.devices is a number of processes: more than the cores only when asked for
    # by naming a strategy (tests/test_ogd_ddp.py runs --trainer.strategy ddp --trainer.devices 2).
    on_cpu, devices, cores = _on_cpu(accelerator), get("devices"), _cpu_cores()
    requested = _requested_devices(devices)
    explicit = get("strategy") not in (None, "auto")
    if on_cpu and (isinstance(devices, (list, tuple)) or str(devices).strip() == "-1" or "," in str(devices)):
        errors.append(f"trainer.devices={devices} on the CPU: give the number of training processes, an integer "
                      "from 1 (a list of devices, or -1 for all of them, is for GPUs).")
    elif on_cpu and requested is not None and requested > cores and not explicit:
        errors.append(f"trainer.devices={devices} on the CPU starts {requested} training processes (DDP), "
                      f"more than the {cores} CPU core{'s' if cores != 1 else ''} this run may use: they would share "
                      f"them, slower than one. Use --trainer.devices {cores} or fewer; to start them anyway (e.g. to "
                      "test DDP), say so with --trainer.strategy ddp (or ddp_spawn).")

    precision = str(get("precision")) if get("precision") is not None else None
    if on_cpu and precision in ("16", "16-mixed"):
        errors.append(f"trainer.precision={precision!r} on the CPU: there is no float16 mixed precision on the CPU "
                      f"and Lightning would run bfloat16 while the run records {precision!r}; use --trainer.precision "
                      "bf16-mixed (what would run), or 32.")
    callbacks = get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    projectors = [cls.__name__ for cls in map(_callback_class, callbacks)
                  if isinstance(cls, type) and issubclass(cls, Method) and cls.projects_gradients]
    if precision in REDUCED_PRECISION and projectors:
        errors.append(f"trainer.precision={precision!r} with {projectors[0]} (trainer.callbacks): gradient "
                      "projection needs float32 gradients (the basis is built outside autocast, so projected "
                      "and stored gradients would differ in precision); use --trainer.precision 32.")
    return errors
