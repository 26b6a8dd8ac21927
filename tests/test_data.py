import pickle

import numpy as np
import pytest
import torch

from conftest import write_cifar
from rolekd.augment.base import AugmentContext, Batch
from rolekd.augment.baseline import BaselineAugmenter, cutout, random_crop, random_flip
from rolekd.data import (
    DataError, Normalizer, SplitError, balanced_split, batch_indices, channel_stats, load_dataset, load_folder,
)


def test_generated_cifar10_loads_through_the_real_reader(cifar_dir):
    ds = load_dataset("cifar10", str(cifar_dir), download=False)
    assert ds.train.images.shape == (100, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.test.images.shape == (40, 3, 32, 32)
    assert ds.num_classes == 10 and ds.classes[3] == "class3"
    # rows are R, G, B planes: pixel (0,0) of channel 1 is byte 1024 of the row
    raw = pickle.load(open(cifar_dir / "cifar-10-batches-py" / "data_batch_1", "rb"), encoding="latin1")
    assert int(ds.train.images[0, 1, 0, 0]) == int(raw["data"][0, 1024])
    assert ds.train.labels.tolist()[:12] == raw["labels"][:12]


def test_generated_cifar100_loads(tmp_path):
    write_cifar(tmp_path, "cifar100", n_train=200, n_test=100)
    ds = load_dataset("cifar100", str(tmp_path), download=False)
    assert ds.num_classes == 100 and len(ds.train) == 200 and int(ds.train.labels.max()) == 99


@pytest.mark.parametrize("damage", ["truncate", "garbage", "bad_labels", "bad_shape"])
def test_corrupt_cifar_file_is_one_line_naming_it(cifar_dir, damage):
    path = cifar_dir / "cifar-10-batches-py" / "data_batch_2"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "garbage":
        path.write_bytes(b"not a pickle at all")
    else:
        obj = pickle.load(open(path, "rb"), encoding="latin1")
        if damage == "bad_labels":
            obj["labels"][0] = 42
        else:
            obj["data"] = obj["data"][:, :100]
        pickle.dump(obj, open(path, "wb"))
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", str(cifar_dir), download=False)
    assert "data_batch_2" in str(exc.value) and "\n" not in str(exc.value)


def test_pickled_code_in_a_batch_file_is_refused(cifar_dir):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = cifar_dir / "cifar-10-batches-py" / "test_batch"
    pickle.dump({"data": Evil(), "labels": []}, open(path, "wb"))
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset("cifar10", str(cifar_dir), download=False)


def test_missing_cifar_offline_says_where_to_put_files(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset("cifar10", str(tmp_path), download=False)


def test_incomplete_cifar_folder_names_the_missing_files(cifar_dir):
    (cifar_dir / "cifar-10-batches-py" / "data_batch_3").unlink()
    (cifar_dir / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="is missing data_batch_3, test_batch; expected"):
        load_dataset("cifar10", str(cifar_dir), download=False)


def test_reduced_split_is_balanced_disjoint_and_seed_stable():
    labels = torch.arange(1000) % 10
    tr, va = balanced_split(labels, 400, 300, seed=3)
    assert len(set(tr.tolist()) & set(va.tolist())) == 0
    assert torch.bincount(labels[tr], minlength=10).tolist() == [40] * 10
    assert torch.bincount(labels[va], minlength=10).tolist() == [30] * 10
    tr2, va2 = balanced_split(labels, 400, 300, seed=3)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    tr3, _ = balanced_split(labels, 400, 300, seed=4)
    assert not torch.equal(tr, tr3)


def test_split_larger_than_dataset_names_the_fields():
    with pytest.raises(SplitError, match="reduced_train"):
        balanced_split(torch.arange(100) % 10, 80, 40, 0)


def test_digits_is_the_embedded_default():
    ds = load_dataset("digits")
    assert ds.train.images.shape[1:] == (3, 32, 32) and ds.num_classes == 10
    assert len(ds.train) + len(ds.test) == 1797
    assert torch.bincount(ds.test.labels).tolist() == [36] * 10
    again = load_dataset("digits")
    assert torch.equal(ds.test.images, again.test.images)


def test_folder_dataset(tmp_path):
    from PIL import Image

    for c, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.new("RGB", (20 + i, 17), colour).save(tmp_path / c / f"{i}.png")
    ds = load_folder(tmp_path, size=16)
    assert ds.classes == ["cat", "dog"] and ds.train.images.shape[1:] == (3, 16, 16)
    assert len(ds.train) + len(ds.test) == 20 and torch.bincount(ds.test.labels).tolist() == [2, 2]
    red = ds.train.images[ds.train.labels == 0]
    assert (red[:, 0] == 255).all() and (red[:, 2] == 0).all()
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match="broken.jpg"):
        load_folder(tmp_path, size=16)


def _write_images(folder, counts):
    from PIL import Image

    for name, n in counts.items():
        (folder / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / name / f"{i}.png")


def test_folder_dataset_refuses_an_empty_class_folder_naming_it(tmp_path):
    _write_images(tmp_path, {"cat": 10, "dog": 10, "emu": 0})
    with pytest.raises(DataError, match=r"emu: class folder 'emu' holds no images"):
        load_folder(tmp_path, size=8)
    _write_images(tmp_path / "split", {"train/cat": 5, "train/dog": 5, "test/cat": 2})
    (tmp_path / "split" / "test" / "dog").mkdir()
    with pytest.raises(DataError, match=r"test/dog: class folder 'dog' holds no images"):
        load_folder(tmp_path / "split", size=8)


def test_folder_dataset_refuses_a_split_without_test_images(tmp_path):
    _write_images(tmp_path, {"cat": 10, "dog": 4})
    with pytest.raises(DataError) as exc:
        load_folder(tmp_path, size=8)
    msg = str(exc.value)
    assert "class 'dog' has 4 image(s), too few to hold out 20% as test images" in msg
    assert "at least 5 per class" in msg and "root/test/<class>" in msg


def test_normalizer_maps_mean_to_zero_and_back():
    x = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(x)
    z = Normalizer(mean, std)(x)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
    assert torch.allclose(Normalizer(mean, std).denormalize(z), x.float(), atol=1e-3)


def test_batches_cover_every_index_once_and_are_seeded():
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = torch.cat(list(batch_indices(103, 10, g1, False, torch.device("cpu"))))
    b = torch.cat(list(batch_indices(103, 10, g2, False, torch.device("cpu"))))
    assert sorted(a.tolist()) == list(range(103)) and torch.equal(a, b)
    dropped = list(batch_indices(103, 10, torch.Generator().manual_seed(1), True, torch.device("cpu")))
    assert len(dropped) == 10 and all(len(i) == 10 for i in dropped)


def test_crop_is_a_shifted_window_with_mean_fill():
    x = torch.randint(1, 255, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_crop(x, 4, torch.Generator().manual_seed(0), (0, 0, 0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(64):  # each output equals the input shifted by some (dy, dx) in -4..4
        found = False
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                ys, xs = slice(max(0, dy), 32 + min(0, dy)), slice(max(0, dx), 32 + min(0, dx))
                ys_in, xs_in = slice(max(0, -dy), 32 + min(0, -dy)), slice(max(0, -dx), 32 + min(0, -dx))
                if torch.equal(out[i, :, ys_in, xs_in], x[i, :, ys, xs]):
                    found = True
        assert found
    assert (out == 0).any()  # padding filled


def test_flip_flips_about_half_and_cutout_masks_a_square():
    x = torch.randint(1, 255, (400, 3, 8, 8), dtype=torch.uint8)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert 150 < int(flipped.sum()) < 250
    c = cutout(x, 4, torch.Generator().manual_seed(0), (0, 0, 0))
    zeros = (c == 0).all(1).flatten(1).sum(1)
    assert zeros.max() == 16 and zeros.min() >= 4  # full square inside, or clipped at a border


def test_baseline_augmenter_keeps_labels_and_is_seeded():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(16)
    aug = BaselineAugmenter(4, True, 16)
    outs = [aug(Batch(x, y), AugmentContext(0, 1, torch.Generator().manual_seed(s))) for s in (5, 5, 6)]
    assert torch.equal(outs[0].images, outs[1].images) and not torch.equal(outs[0].images, outs[2].images)
    assert torch.equal(outs[0].labels, y)


def test_train_subset_is_balanced_and_the_search_split_comes_from_it():
    from rolekd.config import load_config
    from rolekd.pipeline.setup import prepare

    cfg = load_config("demo", ["data.train_subset=500", "data.reduced_train=200", "data.reduced_val=100"])
    prep = prepare(cfg)
    assert len(prep.full.train) == 500 and len(prep.full.test) == 360  # the test split is untouched
    assert torch.bincount(prep.full.train.labels).tolist() == [50] * 10
    reduced = prep.reduced(cfg)
    pool = {tuple(r) for r in prep.full.train.images.flatten(1)[:, ::37].tolist()}
    assert all(tuple(r) in pool for r in reduced.train.images.flatten(1)[:, ::37].tolist())
    with pytest.raises(ValueError, match="data.train_subset = 5000 is larger than the 1437"):
        prepare(load_config("demo", ["data.train_subset=5000"]))
