"""Checkpoints written atomically in their own directory (``lightning-cl`` puts this plugin on every Trainer).

Lightning's :class:`TorchCheckpointIO` writes a local checkpoint through fsspec, which writes it
in the system temporary directory and moves it into place: across filesystems (the run
directory on a shared disk, ``/tmp`` local, as on clusters) the move is a copy, and the final
path holds half a checkpoint while it runs, or for good when the disk fills up. Here the
checkpoint goes through :func:`~lightning_cl.atomic_write.write_atomic` instead: a temporary
file next to it, ``fsync``, ``os.replace``. Remote paths (``s3://`` ...) keep Lightning's way.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from lightning_cl.atomic_write import write_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` whose local saves replace the file atomically.

    ``last_saved`` is the checkpoint this process wrote last and completely (None before the
    first): after a failed save, the checkpoint to resume from. A failed save raises
    :class:`~lightning_cl.atomic_write.WriteFailed` and leaves the file that was at ``path`` as it was.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last_saved: Path | None = None

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # Lightning's refusal or its remote write
            return
        path = Path(str(path).removeprefix("file://"))
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # in memory first (as Lightning does): a write error is then a plain OSError
        write_atomic(path, buffer.getbuffer())
        self.last_saved = path
