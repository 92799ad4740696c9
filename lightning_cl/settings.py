"""What each setting of a run's resolved config is for: the one place that says which settings
make a run what it is, for a run's identity (the study's run ids), the resume check and the
report's groups.

A resolved config (``config.yaml``, the ``config`` of ``results.json``, the checkpoint's copy)
is read as dotted keys (:func:`flatten`). Each key has one of four roles:

* **placement** (:data:`PLACEMENT`): where a run's files go and how it shows its progress
  (``ckpt_path``, ``weights_only``, the data's ``data_dir`` and ``download``, and the trainer's
  ``default_root_dir``, ``logger``, progress bar, model summary, checkpointing, logging
  interval, profiler...). It never changes what a run computes: it is no part of a run's
  identity, never tells report groups apart, and may differ on resume.
* **the accelerator** (``trainer.accelerator``): a GPU changes at most the last digits of the
  results, so it counts as placement in all three: a run may move to a GPU on resume, a
  finished CPU run is recognised when run again with ``--trainer.accelerator gpu``, and CPU
  and GPU runs are summarised together.
* **the seed** (``seed_everything``): part of a run's identity and must match on resume; never
  a grouping setting, since a group is summarised over its seeds.
* everything else **computes**: the model, the data, the task loop, the callbacks and the
  trainer's other settings (``devices``, ``strategy``, ``num_nodes``, ``precision``, the
  limits: they change the numbers). Part of identity, of grouping and of the resume check.

Observing callbacks (:data:`OBSERVERS`: diagnostics, Lightning's own callbacks) draw or save
and leave the training alone: they tell no report groups apart, but as callbacks of the run
they stay part of its identity and of the resume check.

A run's **overrides** (:func:`overrides`) are the grouping settings that its command line set to
another value than its ``-c`` files give (``task_loop.steps_per_task=50`` on a 2000-step
protocol): ``results.json`` records them and the report names them in the group's label, so a
shortened run is never taken for the protocol. A study's overrides count alike (the study hands
them to the run on its command line); the scenario, the benchmark and joint training
(:data:`SHOWN_BY_GROUP`) are not repeated in the label, as the report already shows them.
"""

from __future__ import annotations

from typing import Any

PLACEMENT = frozenset({
    "ckpt_path", "weights_only",  # the fit subcommand's own settings
    "data.init_args.data_dir", "data.init_args.download",
    "data.data_dir", "data.download",  # records of format 1, made before data had a class_path
    "trainer.default_root_dir", "trainer.logger", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.enable_checkpointing", "trainer.log_every_n_steps", "trainer.profiler", "trainer.enable_autolog_hparams",
    "trainer.model_registry",
})
ACCELERATOR = "trainer.accelerator"
SEED = "seed_everything"
CALLBACKS = "trainer.callbacks"
OBSERVERS = ("lightning_cl.diagnostics", "lightning.pytorch.callbacks")  # class_path prefixes
# Overrides the report shows as a group's benchmark, scenario (the table's heading) or method (joint):
# not repeated in the group's label.
SHOWN_BY_GROUP = frozenset({"data.class_path", "data.init_args.scenario", "data.init_args.cumulative",
                            "data.scenario", "data.cumulative"})  # the last two: records of format 1


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"max_epochs": 5}}`` -> ``{"trainer.max_epochs": 5}``.

    Non-empty mappings are walked; anything else is a value, lists (``trainer.callbacks``
    among them) and empty mappings included.
    """
    if not isinstance(config, dict) or (prefix and not config):
        return {prefix: config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def changes_results(key: str) -> bool:
    """Whether a flattened key can change what a run computes (the seed does): neither placement nor the accelerator."""
    return key not in PLACEMENT and key != ACCELERATOR


def _callback_list(callbacks: Any) -> list[Any]:
    """``trainer.callbacks`` as a list (a config may give one callback alone, or none)."""
    return [callbacks] if isinstance(callbacks, dict) else list(callbacks or [])


def _callback_name(callback: Any) -> str:
    """``{"class_path": "lightning_cl.methods.ewc.EWC", ...}`` -> ``EWC``."""
    return str(callback.get("class_path", callback)).rpartition(".")[2] if isinstance(callback, dict) else str(callback)


def _is_observer(callback: Any) -> bool:
    return isinstance(callback, dict) and str(callback.get("class_path", "")).startswith(OBSERVERS)


def grouping_settings(config: dict[str, Any] | None) -> dict[str, Any]:
    """The settings of a run that tell report groups apart (and that TensorBoard's HParams view
    shows), e.g. ``{"callbacks.EWC.lam": 1e5, "model.lr": 0.001, "trainer.devices": 1, ...}``.

    A computing callback's arguments are ``callbacks.<ClassName>.<arg>`` (``callbacks.<ClassName>.on``
    for one without arguments); placement, the accelerator, the seed and observers are left out.
    """
    config = dict(config or {})
    trainer = dict(config.pop("trainer", None) or {})
    flat: dict[str, Any] = {}
    for callback in _callback_list(trainer.pop("callbacks", None)):
        if isinstance(callback, dict) and not _is_observer(callback):
            flat |= flatten(callback.get("init_args") or {"on": True}, f"callbacks.{_callback_name(callback)}")
    flat |= flatten(config) | flatten(trainer, "trainer")
    return {key: value for key, value in flat.items() if changes_results(key) and key != SEED}


def overrides(configured: dict[str, Any] | None, run: dict[str, Any] | None) -> dict[str, Any]:
    """The grouping settings in which a run's resolved config differs from ``configured``, the
    resolved config of its ``-c`` files alone: ``{"task_loop.steps_per_task": 50}``, keyed as in
    :func:`grouping_settings`, with the run's values (None for a setting the run does not have).
    """
    mine, theirs = grouping_settings(run), grouping_settings(configured)
    keys = [*mine, *(key for key in theirs if key not in mine)]
    return {key: mine.get(key) for key in keys if mine.get(key) != theirs.get(key)}


def resume_differences(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, str]:
    """Each computing setting (as written on the command line) in which a checkpoint's resolved
    config and the resuming run's differ: ``{"model.lr": "checkpoint 0.001, config 0.01"}``.

    Callbacks are compared by class in order, then argument by argument.
    """
    saved, current = flatten(saved), flatten(current)
    differences = {}
    for key in sorted(saved.keys() | current.keys()):
        if not changes_results(key) or saved.get(key) == current.get(key):
            continue
        if key == SEED and current.get(key) is True:
            continue  # a random seed is drawn later; the checkpoint's own is then used
        if key == CALLBACKS:
            differences |= _callback_differences(_callback_list(saved.get(key)), _callback_list(current.get(key)))
            continue
        differences[key] = f"checkpoint {saved.get(key)!r}, config {current.get(key)!r}"
    return differences


def _callback_differences(saved: list[Any], current: list[Any]) -> dict[str, str]:
    names = [_callback_name(cb) for cb in saved], [_callback_name(cb) for cb in current]
    if names[0] != names[1]:
        return {CALLBACKS: f"checkpoint {names[0]}, config {names[1]}"}
    differences = {}
    for i, (old, new) in enumerate(zip(saved, current)):
        old, new = (flatten(cb.get("init_args") or {}) if isinstance(cb, dict) else {} for cb in (old, new))
        for arg in sorted(old.keys() | new.keys()):
            if old.get(arg) != new.get(arg):
                differences[f"{CALLBACKS}[{i}] ({names[0][i]}).init_args.{arg}"] = \
                    f"checkpoint {old.get(arg)!r}, config {new.get(arg)!r}"
    return differences
