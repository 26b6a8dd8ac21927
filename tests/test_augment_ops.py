"""Batched PBA ops against a straightforward per-image Pillow reference.

The reference, :mod:`rolekd.augment.pil_reference` (shared with ``benchmarks/augment.py``), is
written from PBA's ``augmentation_transforms.py`` (one Pillow call per image, PBA's magnitude
formulas spelled out literally), on RGB images with ``fillcolor`` = the dataset mean, which is
the fill semantic the package implements.

Tolerances (stated, and asserted):
* colour ops (AutoContrast, Equalize, Invert, Posterize, Solarize, Color, Contrast, Brightness,
  Sharpness): every pixel within 1 grey level and >= 99.9 % of pixels exactly equal. The
  implementation follows Pillow's integer/float/float32 arithmetic, so in practice all pixels
  agree; the 0.1 % would only absorb a last-bit rounding difference in another Pillow version
  (a real off-by-one LUT bug shows up as ~1 % of pixels, which this catches).
* geometric ops (Rotate, ShearX/Y, TranslateX/Y) and Cutout: >= 99 % of pixels exactly equal;
  a differing pixel may be off by any amount (a nearest-neighbour rounding tie near an edge
  picks the neighbouring source pixel or the fill). In practice the 16.16 fixed-point maps agree
  exactly too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rolekd.augment import ops
from rolekd.augment.ops import OP_NAMES, OPS
from rolekd.augment.pil_reference import COLOUR_OPS, FILL, pil_op

GEOMETRIC = ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"]


# ------------------------------------------------------------------ test images


def make_images(n: int = 16, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Seeded uint8 batch with structure: noise, gradients, blocks, low-contrast and flat images."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        kind = i % 4
        if kind == 0:
            img = rng.integers(0, 256, (h, w, 3))
        elif kind == 1:  # colour gradient in a narrow range (AutoContrast/Equalize matter)
            lo, hi = rng.integers(20, 100), rng.integers(140, 230)
            base = lo + (hi - lo) * (xx / (w - 1))[..., None] * rng.uniform(0.5, 1.0, 3)
            img = base + rng.normal(0, 4, (h, w, 3))
        elif kind == 2:  # blocks
            img = np.zeros((h, w, 3))
            for _ in range(6):
                y0, x0 = rng.integers(0, h), rng.integers(0, w)
                img[y0 : y0 + rng.integers(4, h), x0 : x0 + rng.integers(4, w)] = rng.integers(0, 256, 3)
        else:  # smooth diagonal ramp plus a disk
            img = ((xx + yy) * (200 / (h + w)) + 30)[..., None] * np.array([1.0, 0.8, 0.6])
            img[(yy - h // 2) ** 2 + (xx - w // 3) ** 2 < (h // 4) ** 2] = rng.integers(0, 256, 3)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    if n > 5:
        out[5] = 77  # flat image: AutoContrast/Equalize must leave it unchanged
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------ Pillow reference on a batch


def reference_batch(images: torch.Tensor, name: str, levels, signs=None, centers=None) -> torch.Tensor:
    out = []
    for i, arr in enumerate(images.permute(0, 2, 3, 1).numpy()):
        sign = 1 if signs is None else int(signs[i])
        center = (0, 0) if centers is None else tuple(int(v) for v in centers[i])
        res = pil_op(Image.fromarray(arr), name, int(levels[i]), sign, center)
        out.append(torch.from_numpy(np.array(res)).permute(2, 0, 1))
    return torch.stack(out)


def assert_colour_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    diff = (ours.int() - ref.int()).abs()
    exact = (diff == 0).float().mean().item()
    assert diff.max().item() <= 1, f"{what}: max diff {diff.max().item()} > 1"
    assert exact >= 0.999, f"{what}: only {exact:.4f} of pixels exact"


def assert_geometric_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    same = (ours == ref).all(dim=1).float().mean().item()  # per pixel, all channels
    assert same >= 0.99, f"{what}: only {same:.4f} of pixels equal"


# ------------------------------------------------------------------ per-op fidelity


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return make_images()


def test_reference_fill_is_cifar10_mean() -> None:
    assert FILL == (125, 123, 114)


def test_op_names_canonical() -> None:
    assert len(OP_NAMES) == 15 and len(set(OP_NAMES)) == 15
    assert tuple(OPS) == OP_NAMES
    assert set(OP_NAMES) == {
        "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
        "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout",
    }


def test_magnitude_mapping_matches_pba() -> None:
    assert [ops.rotate_degrees(m) for m in (0, 1, 9)] == [0, 3, 27]
    assert ops.translate_pixels(9) == 9 and ops.translate_pixels(4, 64) == 8
    assert ops.shear_coefficient(9) == pytest.approx(0.27)
    assert [ops.posterize_bits(m) for m in range(10)] == [4, 4, 4, 3, 3, 2, 2, 2, 1, 1]
    assert ops.solarize_threshold(0) == 256 and ops.solarize_threshold(9) == 26
    assert ops.enhance_factor(0) == pytest.approx(0.1) and ops.enhance_factor(9) == pytest.approx(1.72)
    assert ops.cutout_size(9) == 18


@pytest.mark.parametrize("name", COLOUR_OPS)
def test_colour_op_matches_pillow(images: torch.Tensor, name: str) -> None:
    levels = torch.arange(images.shape[0]) % 10  # every magnitude 0..9 appears
    ours = OPS[name](images, levels)
    ref = reference_batch(images, name, levels)
    assert ours.dtype == torch.uint8 and ours.shape == images.shape
    assert_colour_close(ours, ref, name)


@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometric_op_matches_pillow(images: torch.Tensor, name: str) -> None:
    n = images.shape[0]
    levels = torch.arange(n) % 10
    signs = torch.tensor([1, -1] * (n // 2))
    ours = OPS[name](images, levels, signs=signs, fill=FILL)
    ref = reference_batch(images, name, levels, signs)
    assert ours.dtype == torch.uint8 and ours.shape == images.shape
    assert_geometric_close(ours, ref, name)


@pytest.mark.parametrize("size", [(32, 32), (24, 40), (72, 72)])  # 72x72: maps built per call, not cached
def test_geometric_ops_other_sizes(size) -> None:
    h, w = size
    imgs = make_images(8, h, w, seed=3)
    levels = torch.tensor([9, 8, 7, 5, 3, 2, 1, 9])
    signs = torch.tensor([1, -1, -1, 1, 1, -1, 1, -1])
    for name in GEOMETRIC:
        ours = OPS[name](imgs, levels, signs=signs, fill=FILL)
        assert_geometric_close(ours, reference_batch(imgs, name, levels, signs), f"{name} {size}")
    centers = torch.stack([torch.arange(8) * h // 8, torch.arange(8).flip(0) * w // 8], 1)
    ours = OPS["Cutout"](imgs, levels, centers=centers, fill=FILL)
    assert_geometric_close(ours, reference_batch(imgs, "Cutout", levels, None, centers), f"Cutout {size}")


def test_cutout_matches_reference(images: torch.Tensor) -> None:
    n = images.shape[0]
    levels = torch.arange(n) % 10
    gen = torch.Generator().manual_seed(1)
    centers = torch.randint(0, 32, (n, 2), generator=gen)
    centers[0] = torch.tensor([0, 31])  # clipped at the border
    ours = OPS["Cutout"](images, levels, centers=centers, fill=FILL)
    assert_geometric_close(ours, reference_batch(images, "Cutout", levels, None, centers), "Cutout")


def test_sharpness_keeps_border_pixels(images: torch.Tensor) -> None:
    out = ops.sharpness(images, 9)
    assert torch.equal(out[..., 0, :], images[..., 0, :])
    assert torch.equal(out[..., -1, :], images[..., -1, :])
    assert torch.equal(out[..., :, 0], images[..., :, 0])
    assert torch.equal(out[..., :, -1], images[..., :, -1])
    assert not torch.equal(out, images)


def test_geometric_fill_is_mean(images: torch.Tensor) -> None:
    out = ops.translate_x(images[:2], 9, signs=1, fill=FILL)  # content moves left by 9 px
    assert (out[:, :, :, -9:] == torch.tensor(FILL).view(1, 3, 1, 1)).all()
    assert torch.equal(out[:, :, :, :-9], images[:2, :, :, 9:])


def test_magnitude_zero_geometric_is_identity(images: torch.Tensor) -> None:
    for name in GEOMETRIC:
        assert torch.equal(OPS[name](images, 0, signs=-1, fill=FILL), images), name


# ------------------------------------------------------------------ composition and shapes


def test_sequence_equals_sequential_ops(images: torch.Tensor) -> None:
    """The grouped executor equals applying each sample's two ops one after the other."""
    n = images.shape[0]
    gen = torch.Generator().manual_seed(5)
    seq = torch.randint(0, 15, (n, 2), generator=gen)
    seq[0, 1] = -1
    levels = torch.randint(0, 10, (n, 2), generator=gen)
    signs = torch.where(torch.rand(n, 2, generator=gen) < 0.5, -1, 1)
    centers = torch.randint(0, 32, (n, 2, 2), generator=gen)
    out = ops.apply_op_sequence(images, seq, levels, signs, centers, FILL)
    for i in range(n):
        x = images[i : i + 1]
        for k in range(2):
            if seq[i, k] >= 0:
                x = ops.apply_op(
                    OP_NAMES[seq[i, k]],
                    x,
                    levels[i, k : k + 1],
                    signs=signs[i, k : k + 1],
                    centers=centers[i, k : k + 1],
                    fill=FILL,
                )
        assert torch.equal(out[i : i + 1], x), f"sample {i}: {[OP_NAMES[j] for j in seq[i] if j >= 0]}"


def test_every_op_pair_equals_sequential_ops() -> None:
    """All 15 x 15 ordered pairs in one batch (this exercises the fused warp+warp and
    table+table paths) equal the two ops applied one after the other."""
    n = len(OP_NAMES) ** 2
    images = make_images(n, seed=9)
    gen = torch.Generator().manual_seed(11)
    pairs = torch.cartesian_prod(torch.arange(15), torch.arange(15))
    levels = torch.randint(1, 10, (n, 2), generator=gen)
    signs = torch.where(torch.rand(n, 2, generator=gen) < 0.5, -1, 1)
    centers = torch.randint(0, 32, (n, 2, 2), generator=gen)
    out = ops.apply_op_sequence(images, pairs, levels, signs, centers, FILL)
    x = images.clone()
    for k in range(2):  # reference: one single-op call per op and step (never fused)
        for j, name in enumerate(OP_NAMES):
            rows = (pairs[:, k] == j).nonzero().squeeze(1)
            x[rows] = ops.apply_op(
                name, x[rows], levels[rows, k], signs=signs[rows, k], centers=centers[rows, k], fill=FILL
            )
    same = (out == x).flatten(1).all(1).tolist()
    bad = [f"{OP_NAMES[a]}->{OP_NAMES[b]}" for (a, b), ok in zip(pairs.tolist(), same) if not ok]
    assert not bad, bad


def test_compose_index_is_exact(images: torch.Tensor) -> None:
    """Two warps composed into one gather equal the two warps applied in turn."""
    h, w = images.shape[2:]
    table = torch.tensor(ops._warp_rows(h, w))
    rot = ops.affine_index(table[0 * 22 + 7 * 2 : 0 * 22 + 7 * 2 + 1], h, w)  # Rotate 21 deg
    shear = ops.affine_index(table[1 * 22 + 6 * 2 + 1 : 1 * 22 + 6 * 2 + 2], h, w)  # ShearX -0.18
    fill = torch.tensor(FILL, dtype=torch.uint8)
    n = images.shape[0]
    twice = ops.remap(ops.remap(images, rot.expand(n, -1), fill), shear.expand(n, -1), fill)
    once = ops.remap(images, ops.compose_index(rot, shear).expand(n, -1), fill)
    assert torch.equal(once, twice)
    ref = reference_batch(reference_batch(images, "Rotate", [7] * n), "ShearX", [6] * n, [-1] * n)
    assert_geometric_close(once, ref, "Rotate then ShearX")


@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("name", OP_NAMES)
def test_any_batch_size(name: str, n: int) -> None:
    imgs = make_images(max(n, 1), seed=2)[:n]
    out = ops.apply_op(name, imgs, 4, fill=FILL, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == imgs.shape


def test_grayscale_images() -> None:
    imgs = make_images(4)[:, :1].contiguous()
    for name in OP_NAMES:
        out = ops.apply_op(name, imgs, 6, fill=120, generator=torch.Generator().manual_seed(0))
        assert out.shape == imgs.shape and out.dtype == torch.uint8


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        ops.invert(torch.zeros(2, 3, 8, 8))  # float
    with pytest.raises(ValueError):
        ops.posterize(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 11)
    with pytest.raises(ValueError):
        ops.apply_op("Blur", torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# ------------------------------------------------------------------ CPU vs CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", OP_NAMES)
def test_cpu_and_cuda_agree(images: torch.Tensor, name: str) -> None:
    n = images.shape[0]
    levels = torch.arange(n) % 10
    signs = torch.tensor([1, -1] * (n // 2))
    centers = torch.randint(0, 32, (n, 2), generator=torch.Generator().manual_seed(0))
    cpu = OPS[name](images, levels, signs=signs, centers=centers, fill=FILL)
    gpu = OPS[name](images.cuda(), levels.cuda(), signs=signs.cuda(), centers=centers.cuda(), fill=FILL)
    # Same integer / float32 arithmetic on both devices: at most 1 grey level apart, >= 99.9 % equal.
    diff = (cpu.int() - gpu.cpu().int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() >= 0.999
