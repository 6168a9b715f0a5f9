"""rlmix.data: registry, the generated shapes dataset, the batch loader, CIFAR and ImageFolder."""

import hashlib
import itertools
import os
import pickle
import urllib.error

import pytest
import torch
import torch.nn.functional as F

import rlmix.data.shapes as shapes_mod
from rlmix.data import (
    BatchLoader,
    DatasetInfo,
    ImageTensors,
    dataset_options,
    list_datasets,
    load_dataset,
)
from rlmix.data.base import channel_stats
from rlmix.data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from rlmix.data.loader import crop_flip
from rlmix.data.shapes import SHAPE_NAMES, SHAPES, cache_path, generate_shapes
from rlmix.errors import ConfigError, RlmixError

SMALL = {"train_size": 60, "test_size": 30}


def make_split(n=10, size=8, boxes=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    box = torch.tensor([[1.0, 2.0, 5.0, 7.0]]).repeat(n, 1) if boxes else None
    return ImageTensors(images=images, labels=torch.arange(n) % 3, boxes=box)


# -- registry and records ----------------------------------------------------------------------


def test_registry_lists_datasets_and_options():
    assert list_datasets() == [
        "cifar10",
        "cifar100",
        "fashion_mnist",
        "hf",
        "imagefolder",
        "mnist",
        "shapes",
    ]
    assert dataset_options("fashion_mnist") == ["image_size"]
    assert dataset_options("shapes") == [
        "clutter",
        "num_classes",
        "object_size",
        "test_size",
        "train_size",
    ]
    assert dataset_options("imagefolder") == ["image_size", "test_dir", "train_dir"]
    assert dataset_options("cifar10") == []


def test_load_dataset_rejects_unknown_names_and_options(tmp_path):
    with pytest.raises(
        ValueError, match="unknown dataset 'imagenet'; choose one of: cifar10, cifar100, fashion"
    ):
        load_dataset("imagenet", root=tmp_path)
    with pytest.raises(ValueError, match="unknown option 'colour' for dataset 'shapes'; valid"):
        load_dataset("shapes", root=tmp_path, colour=True)
    with pytest.raises(ValueError, match="unknown option 'image_size' for dataset 'cifar10'"):
        load_dataset("cifar10", root=tmp_path, image_size=32)
    with pytest.raises(ValueError, match=r"num_classes must be in \[2, 12\], got 13"):
        load_dataset("shapes", root=tmp_path, num_classes=13)
    with pytest.raises(ValueError, match="train_size must be an integer, got str"):
        load_dataset("shapes", root=tmp_path, train_size="100")
    with pytest.raises(ValueError, match=r"object_size must be \[min, max\] pixels with 4 <= min"):
        load_dataset("shapes", root=tmp_path, object_size=[20, 10])
    with pytest.raises(ValueError, match=r"clutter must be a number in \[0, 2\], got 3"):
        load_dataset("shapes", root=tmp_path, clutter=3)
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        load_dataset("shapes", root=tmp_path, seed=-1)


def test_image_tensors_validation():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.long)
    assert len(ImageTensors(images, labels)) == 4
    with pytest.raises(TypeError, match="images must be a uint8 tensor"):
        ImageTensors(images.float(), labels)
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\), got \(4, 8, 8\)"):
        ImageTensors(images[:, 0], labels)
    with pytest.raises(TypeError, match=r"labels must be an int64 \(long\) tensor"):
        ImageTensors(images, labels.int())
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\), got \(3,\)"):
        ImageTensors(images, labels[:3])
    with pytest.raises(TypeError, match="boxes must be a float tensor"):
        ImageTensors(images, labels, torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"boxes must have shape \(4, 4\), got \(4, 2\)"):
        ImageTensors(images, labels, torch.zeros(4, 2))


def test_channel_stats_hand_computed():
    images = torch.zeros(2, 2, 2, 2, dtype=torch.uint8)
    images[0, 0] = 255  # channel 0: half the pixels 1, half 0 -> mean 0.5, std 0.5
    images[:, 1] = 51  # channel 1: constant 0.2 -> std 0
    mean, std = channel_stats(images, chunk=1)
    assert mean == pytest.approx((0.5, 0.2))
    assert std == pytest.approx((0.5, 0.0), abs=1e-6)


# -- shapes ------------------------------------------------------------------------------------


def test_shape_masks_fit_the_unit_disk_and_differ():
    coords = torch.linspace(-1.2, 1.2, 121)
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    outside = u.square() + v.square() > 1.0
    masks = {name: draw(u, v) for name, draw in SHAPES.items()}
    for name, mask in masks.items():
        assert not (mask & outside).any(), name
        assert mask.float().mean() > 0.1, name  # a visible object, not a sliver
    for a, b in itertools.combinations(masks, 2):
        iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
        assert iou < 0.8, (a, b)


def test_generate_shapes_is_deterministic_per_seed():
    a = generate_shapes(40, 10, seed=1)
    b = generate_shapes(40, 10, seed=1)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.boxes, b.boxes)
    other_seed = generate_shapes(40, 10, seed=2)
    other_split = generate_shapes(40, 10, seed=1, split="test")
    assert not torch.equal(a.images, other_seed.images)
    assert not torch.equal(a.images, other_split.images)


def test_clutter_option_scales_the_background_only():
    plain, default, busy = (generate_shapes(60, 10, seed=0, clutter=c) for c in (0.0, 1.0, 2.0))
    # Clutter only scales drawn values, so the objects (labels, boxes) are the same.
    assert torch.equal(plain.boxes, busy.boxes) and torch.equal(plain.labels, busy.labels)
    assert torch.equal(default.images, generate_shapes(60, 10, seed=0).images)
    cols = torch.arange(32.0)
    x1, y1, x2, y2 = (c[:, None, None] for c in plain.boxes.unbind(1))
    inside = (cols >= x1) & (cols < x2) & (cols[:, None] >= y1) & (cols[:, None] < y2)

    def roughness(data):  # mean |horizontal pixel step| away from the object
        step = (data.images[..., 1:].float() - data.images[..., :-1].float()).abs().mean(1)
        return step[~(inside[..., 1:] | inside[..., :-1])].mean()

    assert roughness(plain) < 0.5 * roughness(default) < 0.5 * roughness(busy)


def test_shapes_are_balanced_with_plausible_boxes():
    data = generate_shapes(240, 12, seed=0)
    assert data.images.shape == (240, 3, 32, 32) and data.images.dtype == torch.uint8
    assert torch.equal(torch.bincount(data.labels, minlength=12), torch.full((12,), 20))
    x1, y1, x2, y2 = data.boxes.unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 32).all() and (y2 <= 32).all()
    width, height = x2 - x1, y2 - y1
    # Objects span 10-20 px (enclosing disk); the thinnest (a bar) is about a quarter as tall.
    longest = torch.maximum(width, height)
    assert (longest >= 6).all() and (longest <= 21).all()
    assert (torch.minimum(width, height) >= 2).all()
    # The pixel grid is not flat inside boxes: the object sits there.
    assert all(
        data.images[i, :, int(y1[i]) : int(y2[i]), int(x1[i]) : int(x2[i])].float().std() > 10
        for i in range(len(data))
    )


def test_boxes_from_coverage_hand_computed():
    alpha = torch.zeros(2, 6, 6)
    alpha[0, 1:3, 2:5] = 1.0  # rows 1-2, columns 2-4
    alpha[1, 4, 0] = 0.5
    alpha[1, 0, 5] = 0.4  # below 0.5: not part of the object
    boxes = shapes_mod._boxes(alpha)
    assert boxes.tolist() == [[2.0, 1.0, 5.0, 3.0], [0.0, 4.0, 1.0, 5.0]]


def test_object_colour_does_not_depend_on_class():
    data = generate_shapes(600, 3, seed=0)
    # Mean colour inside each object's box is the same for every class, up to sampling noise.
    boxes = data.boxes.long().tolist()
    crops = torch.stack(
        [
            data.images[i, :, y1:y2, x1:x2].float().mean(dim=(1, 2)) / 255
            for i, (x1, y1, x2, y2) in enumerate(boxes)
        ]
    )
    means = [crops[data.labels == k].mean(0) for k in range(3)]
    spread = torch.stack(means).amax(0) - torch.stack(means).amin(0)
    assert (spread < 0.06).all(), spread


def _small_cache(root, **options):
    """The cache path of the SMALL splits with the default clutter and object size."""
    defaults = {"clutter": 1.0, "object_size": [10.0, 20.0]}
    return cache_path(str(root), **SMALL, **defaults, **options)


def test_shapes_dataset_info_and_cache(tmp_path, monkeypatch):
    train, test, info = load_dataset("shapes", root=tmp_path, seed=3, num_classes=4, **SMALL)
    path = _small_cache(tmp_path, num_classes=4, seed=3)
    assert path.is_file() and path.parent == tmp_path / "shapes"
    assert os.listdir(path.parent) == [path.name]  # the temporary file was renamed away
    assert isinstance(info, DatasetInfo)
    assert (info.name, info.num_classes, info.image_size, info.channels) == ("shapes", 4, 32, 3)
    assert info.has_boxes and info.class_names == list(SHAPE_NAMES[:4])
    assert info.mean == pytest.approx(channel_stats(train.images)[0])
    assert (len(train), len(test)) == (60, 30)
    assert train.boxes is not None and test.boxes is not None
    assert torch.equal(train.images, generate_shapes(60, 4, seed=3).images)
    assert torch.equal(test.images, generate_shapes(30, 4, seed=3, split="test").images)

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(shapes_mod, "generate_shapes", fail)
    train2, test2, info2 = load_dataset("shapes", root=tmp_path, seed=3, num_classes=4, **SMALL)
    assert torch.equal(train2.images, train.images) and torch.equal(test2.boxes, test.boxes)
    assert info2 == info
    with pytest.raises(AssertionError, match="cache should have been used"):
        load_dataset("shapes", root=tmp_path, seed=4, num_classes=4, **SMALL)


def test_unreadable_cache_is_regenerated(tmp_path):
    path = _small_cache(tmp_path, num_classes=3, seed=0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="ignoring unreadable shapes cache"):
        train, _, _ = load_dataset("shapes", root=tmp_path, num_classes=3, **SMALL)
    assert torch.equal(train.images, generate_shapes(60, 3, seed=0).images)
    assert torch.load(path, weights_only=True)["train_labels"].shape == (60,)


# -- loader ------------------------------------------------------------------------------------


def test_loader_batches_shapes_dtype_and_range():
    data = make_split(10)
    loader = BatchLoader(data, 4, shuffle=False, drop_last=False, augment=False)
    batches = list(loader)
    assert len(loader) == 3 and [len(b[1]) for b in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(x, data.images[:4].float() / 255) and torch.equal(y, data.labels[:4])
    assert all(0 <= b[0].min() and b[0].max() <= 1 for b in batches)
    dropped = BatchLoader(data, 4, shuffle=True, drop_last=True, augment=True)
    assert len(dropped) == 2 and [len(b[1]) for b in dropped] == [4, 4]


def test_loader_order_is_a_function_of_seed_and_epoch():
    data = make_split(50)

    def labels_and_pixels(seed, epoch):
        loader = BatchLoader(data, 10, shuffle=True, drop_last=True, augment=True, seed=seed)
        loader.set_epoch(epoch)
        return torch.cat([x for x, _ in loader]), loader.order()

    x0, order0 = labels_and_pixels(0, 0)
    x0_again, order0_again = labels_and_pixels(0, 0)
    x1, order1 = labels_and_pixels(0, 1)
    _, order_other_seed = labels_and_pixels(1, 0)
    assert torch.equal(x0, x0_again) and torch.equal(order0, order0_again)
    assert sorted(order0.tolist()) == list(range(50))
    assert not torch.equal(order0, order1) and not torch.equal(order0, order_other_seed)
    assert not torch.equal(x0, x1)


def test_loader_with_boxes_yields_matching_boxes():
    data = make_split(6, boxes=True)
    data.boxes[:, 0] = torch.arange(6.0)
    loader = BatchLoader(data, 4, shuffle=True, drop_last=False, augment=False, with_boxes=True)
    for x, y, boxes in loader:
        idx = boxes[:, 0].long()
        assert torch.equal(x, data.images[idx].float() / 255) and torch.equal(y, data.labels[idx])


def test_crop_flip_hand_computed():
    x = torch.arange(1, 17, dtype=torch.uint8).view(1, 1, 4, 4)
    top_left = crop_flip(x, torch.tensor([[0, 0]]), torch.tensor([False]), pad=1)
    assert top_left[0, 0].tolist() == [[0, 0, 0, 0], [0, 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11]]
    flipped = crop_flip(x, torch.tensor([[0, 0]]), torch.tensor([True]), pad=1)
    assert torch.equal(flipped, torch.flip(top_left, dims=[-1]))
    identity = crop_flip(x, torch.tensor([[1, 1]]), torch.tensor([False]), pad=1)
    assert torch.equal(identity, x)
    bottom_right = crop_flip(x, torch.tensor([[2, 2]]), torch.tensor([False]), pad=1)
    assert bottom_right[0, 0, :, 3].tolist() == [0, 0, 0, 0]
    assert bottom_right[0, 0, 0, :3].tolist() == [6, 7, 8]


def test_crop_flip_matches_per_image_slicing():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8, generator=g)
    offsets = torch.randint(0, 5, (5, 2), generator=g)
    flip = torch.tensor([True, False, True, False, True])
    out = crop_flip(x, offsets, flip, pad=2)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(5):
        dy, dx = offsets[i].tolist()
        crop = padded[i, :, dy : dy + 6, dx : dx + 6]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)


def test_loader_augmentation_is_a_crop_and_flip_of_each_image():
    data = make_split(8, size=6)
    loader = BatchLoader(data, 8, shuffle=False, drop_last=True, augment=True, pad=2, seed=5)
    ((x, _),) = list(loader)
    padded = F.pad(data.images.float() / 255, (2, 2, 2, 2))
    for i in range(8):
        candidates = [
            c
            for dy, dx in itertools.product(range(5), range(5))
            for c in (padded[i, :, dy : dy + 6, dx : dx + 6],)
            for c in (c, c.flip(-1))
        ]
        assert any(torch.equal(x[i], c) for c in candidates)
    assert not torch.equal(x, data.images.float() / 255)
    flips_only = BatchLoader(data, 8, shuffle=False, drop_last=True, augment=True, pad=0)
    ((xf, _),) = list(flips_only)
    plain = data.images.float() / 255
    assert all(
        torch.equal(xf[i], plain[i]) or torch.equal(xf[i], plain[i].flip(-1)) for i in range(8)
    )


def test_loader_validation_messages():
    data = make_split(10)
    with pytest.raises(
        ValueError, match=r"batch_size \(11\) is larger than the split \(10 images\)"
    ):
        BatchLoader(data, 11, shuffle=True, drop_last=True, augment=False)
    assert len(BatchLoader(data, 11, shuffle=False, drop_last=False, augment=False)) == 1
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        BatchLoader(data, 0, shuffle=True, drop_last=True, augment=False)
    with pytest.raises(ValueError, match="pad must be a non-negative integer, got -1"):
        BatchLoader(data, 2, shuffle=True, drop_last=True, augment=True, pad=-1)
    with pytest.raises(ValueError, match="with_boxes=True but the split has no boxes"):
        BatchLoader(data, 2, shuffle=False, drop_last=False, augment=False, with_boxes=True)
    with pytest.raises(ValueError, match="with_boxes=True cannot be combined with augment=True"):
        BatchLoader(
            make_split(10, boxes=True),
            2,
            shuffle=False,
            drop_last=False,
            augment=True,
            with_boxes=True,
        )
    with pytest.raises(TypeError, match="data must be an ImageTensors split, got Tensor"):
        BatchLoader(data.images, 2, shuffle=False, drop_last=False, augment=False)
    empty = ImageTensors(data.images[:0], data.labels[:0])
    with pytest.raises(ValueError, match="data is empty"):
        BatchLoader(empty, 2, shuffle=False, drop_last=False, augment=False)


# -- CIFAR -------------------------------------------------------------------------------------


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _fake_cifar(tmp_path, monkeypatch, cls, train_files, test_file, meta_name, label_key, names):
    """Write tiny files in torchvision's CIFAR pickle format and register their checksums.

    torchvision verifies every file against the md5 of the official archive. Rather than stub the
    integrity check out, the test points the class's checksum tables at the fixture files, so
    torchvision's own loading path (existence + md5 + unpickling) runs unchanged.
    """
    folder = tmp_path / cls.base_folder
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    written = {}
    for i, name in enumerate([*train_files, test_file]):
        n = 3 + i
        data = torch.randint(0, 256, (n, 3072), dtype=torch.uint8, generator=g).numpy()
        labels = torch.randint(0, len(names), (n,), generator=g).tolist()
        _pickle(folder / name, {"data": data, label_key: labels})
        written[name] = (torch.from_numpy(data).view(n, 3, 32, 32), torch.tensor(labels))
    _pickle(folder / meta_name, {cls.meta["key"]: names})
    monkeypatch.setattr(cls, "train_list", [[f, _md5(folder / f)] for f in train_files])
    monkeypatch.setattr(cls, "test_list", [[test_file, _md5(folder / test_file)]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / meta_name)})
    train = [written[f] for f in train_files]
    return (
        torch.cat([t[0] for t in train]),
        torch.cat([t[1] for t in train]),
        written[test_file],
    )


def test_cifar10_loads_torchvision_format(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    names = [f"class{i}" for i in range(10)]
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    train_x, train_y, (test_x, test_y) = _fake_cifar(
        tmp_path, monkeypatch, CIFAR10, batches, "test_batch", "batches.meta", "labels", names
    )
    train, test, info = load_dataset("cifar10", root=tmp_path)
    assert train.images.shape == (3 + 4 + 5 + 6 + 7, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.long
    assert torch.equal(train.images, train_x) and torch.equal(train.labels, train_y)
    assert torch.equal(test.images, test_x) and torch.equal(test.labels, test_y)
    assert train.boxes is None and test.boxes is None
    assert (info.name, info.num_classes, info.image_size, info.has_boxes) == (
        "cifar10",
        10,
        32,
        False,
    )
    assert info.mean == CIFAR10_MEAN and info.std == CIFAR10_STD and info.class_names == names


def test_cifar100_loads_torchvision_format(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    names = [f"fine{i}" for i in range(100)]
    train_x, train_y, (test_x, test_y) = _fake_cifar(
        tmp_path, monkeypatch, CIFAR100, ["train"], "test", "meta", "fine_labels", names
    )
    train, test, info = load_dataset("cifar100", root=tmp_path)
    assert torch.equal(train.images, train_x) and torch.equal(train.labels, train_y)
    assert torch.equal(test.images, test_x) and torch.equal(test.labels, test_y)
    assert info.num_classes == 100 and info.class_names == names
    assert info.mean == CIFAR100_MEAN and info.std == CIFAR100_STD


def test_missing_cifar_is_a_config_error(tmp_path):
    root = str(tmp_path / "nowhere")
    expected = os.path.join(root, "cifar-100-python")
    with pytest.raises(ConfigError, match="CIFAR-100 not found under") as err:
        load_dataset("cifar100", root=root)
    assert expected in str(err.value) and "download=true" in str(err.value)
    with pytest.raises(ConfigError, match="CIFAR-10 not found under .*cifar-10-batches-py"):
        load_dataset("cifar10", root=root)


def test_failed_cifar_download_is_an_rlmix_error(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(CIFAR10, "download", offline)
    with pytest.raises(RlmixError, match="could not download CIFAR-10 to .*no network"):
        load_dataset("cifar10", root=tmp_path, download=True)


# -- ImageFolder -------------------------------------------------------------------------------


def _write_images(folder, colours, size=(48, 40)):
    from PIL import Image

    folder.mkdir(parents=True)
    for i, colour in enumerate(colours):
        Image.new("RGB", size, colour).save(folder / f"{i}.png")


def test_imagefolder_loads_resizes_and_maps_classes(tmp_path):
    _write_images(tmp_path / "train" / "cat", [(255, 0, 0), (255, 0, 0)])
    _write_images(tmp_path / "train" / "dog", [(0, 0, 255)])
    _write_images(tmp_path / "test" / "dog", [(0, 255, 0)])  # "val" missing: falls back to test
    train, test, info = load_dataset("imagefolder", root=tmp_path, image_size=16)
    assert train.images.shape == (3, 3, 16, 16) and test.images.shape == (1, 3, 16, 16)
    assert train.labels.tolist() == [0, 0, 1] and test.labels.tolist() == [1]
    assert train.images[:, :, 0, 0].tolist() == [[255, 0, 0], [255, 0, 0], [0, 0, 255]]
    assert test.images[0, :, 5, 7].tolist() == [0, 255, 0]
    assert info.class_names == ["cat", "dog"] and info.num_classes == 2 and not info.has_boxes
    assert info.image_size == 16 and info.mean == pytest.approx((2 / 3, 0.0, 1 / 3))
    assert info.std == pytest.approx(((2 / 9) ** 0.5, 0.0, (2 / 9) ** 0.5))


def test_imagefolder_errors_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match="train directory '.*train' does not exist"):
        load_dataset("imagefolder", root=tmp_path)
    _write_images(tmp_path / "train" / "cat", [(1, 2, 3)])
    with pytest.raises(ConfigError, match="test directory '.*val' or '.*test' does not exist"):
        load_dataset("imagefolder", root=tmp_path)
    with pytest.raises(ConfigError, match="test directory '.*holdout' does not exist"):
        load_dataset("imagefolder", root=tmp_path, test_dir="holdout")
    _write_images(tmp_path / "val" / "bird", [(1, 2, 3)])
    with pytest.raises(ConfigError, match=r"test classes \['bird'\] of '.*val' are not in"):
        load_dataset("imagefolder", root=tmp_path)
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no usable images under '.*empty'"):
        load_dataset("imagefolder", root=tmp_path, train_dir="empty")
