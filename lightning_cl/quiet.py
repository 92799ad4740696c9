"""What lightning-cl silences of Lightning's and torch's output, and why: the one place.

A run prints its seed, whether a GPU is there, the model summary, the progress bar, one line per
task and where its results are. Before that, Lightning printed banners and warnings that say
nothing about the run and that its user cannot act on. Each filter below matches one message
from its start (a warning's category too) and says why it is noise here; every other message is
left alone. :func:`install` puts them in place. ``lightning-cl`` (:func:`lightning_cl.cli.main`,
which every run of a study also goes through) and a study's processes (the runner and each
warm worker) call it; a program that builds the CLI itself (``run_cli``) keeps Lightning's output.

Kept on purpose:

* ``Seed set to N``: the run's seed.
* ``GPU available: True (cuda), used: False`` and Lightning's warning "GPU available but not
  used": runs are on the CPU unless ``--trainer.accelerator gpu`` is given; on a machine with a
  GPU these lines are the hint to give it.
* the model summary (the network's size): ``--trainer.enable_model_summary false`` leaves it out.
"""

from __future__ import annotations

import logging
import re
import warnings

from lightning.fabric.utilities.warnings import PossibleUserWarning

# (message regex, category, why it is noise for a lightning-cl user)
WARNINGS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning,
     "Lightning's own use of a class that torch deprecated (lightning/pytorch/utilities/_pytree.py); "
     "nothing in a run or its config causes it"),
    (r"The number of training batches \(\d+\) is smaller than the logging interval", PossibleUserWarning,
     "a task of task_loop.steps_per_task batches is one epoch, shorter than log_every_n_steps; Lightning counts "
     "that interval across epochs, so the train/ metrics are still logged every log_every_n_steps steps"),
    (r"Total length of `TensorBatchLoader` across ranks is zero", UserWarning,
     "data.val_fraction 0 (Mammoth's protocol: every training image is trained on) holds out no validation "
     "images, so the validation loader is empty by design; results.json's val_seen_accuracy is then null"),
    (r"LightningCLI's args parameter is intended to run from within Python", UserWarning,
     "a study hands each run its arguments in-process, by design, while sys.argv holds the study's command"),
)

# (message regex, why it is noise) for the info lines of Lightning's rank-zero logger
INFO_LINES = (
    (r"💡 Tip: For seamless cloud logging", "an advert for a Lightning service (litlogger); the run logs to "
     "TensorBoard and results.json"),
    (r"TPU available: False", "lightning-cl runs on CPUs and GPUs: the line is always the same"),
    (r"`Trainer\.fit` stopped: `max_epochs=\d+` reached", "the task loop sets max_epochs itself "
     "(epochs_per_task x tasks), so the number is not one the user gave; the task lines and `results:` say what "
     "was trained"),
)

# Lightning logs its rank-zero info lines through one of these (whichever of the two packages set it last).
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _InfoLineFilter(logging.Filter):
    """Drops the log records whose message starts with one of :data:`INFO_LINES`."""

    def __init__(self) -> None:
        super().__init__()
        self.patterns = [re.compile(pattern) for pattern, _ in INFO_LINES]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.match(message) for pattern in self.patterns)


_FILTER = _InfoLineFilter()


def install() -> None:
    """Silence :data:`WARNINGS` and :data:`INFO_LINES` in this process (calling it again changes nothing)."""
    for message, category, _ in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)  # an equal filter is replaced
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
