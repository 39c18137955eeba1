from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import DTypeLike

from edge.core.preprocess import (
    InputSpec,
    dequantise,
    preprocess,
    quantise,
    resize,
    to_colour,
    to_layout,
)


def test_resize_area_average_of_exact_blocks() -> None:
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    out = resize(img, 2, 2)
    # Each output pixel averages 2x2 samples spread over its 2x2 source block.
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, [[2.5, 4.5], [10.5, 12.5]])


@pytest.mark.slow
def test_resize_keeps_a_constant_image_constant_at_any_size() -> None:
    img = np.full((1080, 1920, 3), 77, np.uint8)
    for w, h in ((96, 96), (224, 160), (3000, 2000)):
        out = resize(img[:333, :517], w, h)
        assert out.shape == (h, w, 3)
        assert np.all(out == 77)


def test_resize_rejects_empty_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="cannot resize an image of shape"):
        resize(np.zeros((0, 5, 3), np.uint8), 4, 4)
    with pytest.raises(ValueError, match="target size must be positive"):
        resize(np.zeros((5, 5, 3), np.uint8), 0, 4)


def test_colour_orders() -> None:
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 2] = 200  # pure red in BGR
    assert to_colour(bgr, "RGB")[0, 0].tolist() == [200, 0, 0]
    assert to_colour(bgr, "BGR")[0, 0].tolist() == [0, 0, 200]
    grey = to_colour(bgr, "GRAY")
    assert grey.shape == (2, 2, 1)
    assert grey[0, 0, 0] == pytest.approx(0.299 * 200)


def test_preprocess_normalises_per_channel_in_model_order() -> None:
    bgr = np.zeros((10, 10, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    spec = InputSpec(4, 4, colour="RGB", mean=(0, 0, 0), std=(255, 255, 255))
    x = preprocess(bgr, spec)
    assert x.shape == (4, 4, 3)
    assert x.dtype == np.float32
    assert x[0, 0].tolist() == [0.0, 0.0, 1.0]
    spec2 = InputSpec(4, 4, colour="BGR", mean=(127.5,) * 3, std=(127.5,) * 3)
    assert preprocess(bgr, spec2)[0, 0].tolist() == [1.0, -1.0, -1.0]


def test_preprocess_mask_greys_out_outside_polygon() -> None:
    img = np.full((40, 40, 3), 255, np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[:, :20] = True  # keep the left half only
    spec = InputSpec(8, 8, mean=(0, 0, 0), std=(1, 1, 1))
    x = preprocess(img, spec, mask)
    assert np.all(x[:, :4] == 255)
    assert np.all(x[:, 4:] == 128)
    with pytest.raises(ValueError, match="mask"):
        preprocess(img, spec, np.ones((10, 10), bool))


def test_layout_nchw() -> None:
    batch = np.arange(2 * 3 * 4 * 3, dtype=np.float32).reshape(2, 3, 4, 3)
    nchw = to_layout(batch, "NCHW")
    assert nchw.shape == (2, 3, 3, 4)
    assert nchw[1, 2, 0, 1] == batch[1, 0, 1, 2]
    assert to_layout(batch, "NHWC") is batch


def test_quantise_uses_given_parameters_and_saturates() -> None:
    x = np.array([-1.0, 0.0, 0.5, 1.0, 5.0], np.float32)
    q = quantise(x, 1 / 128, 128, np.dtype(np.uint8))
    assert q.dtype == np.uint8
    assert q.tolist() == [0, 128, 192, 255, 255]
    qi = quantise(x, 0.02, -14, np.dtype(np.int8))
    assert qi.tolist() == [-64, -14, 11, 36, 127]
    np.testing.assert_allclose(dequantise(qi, 0.02, -14)[:4], [-1.0, 0.0, 0.5, 1.0], atol=0.011)
    f = quantise(x, 0.0, 0, np.dtype(np.float32))
    assert f.dtype == np.float32
    assert f.tolist() == x.tolist()


@pytest.mark.parametrize(
    ("spec", "scale", "zero", "dtype"),
    [
        (InputSpec(128, 128), 0.007843137718737125, 127, np.uint8),
        (
            InputSpec(96, 96, colour="BGR", mean=(0, 0, 0), std=(255, 255, 255)),
            1 / 255,
            0,
            np.uint8,
        ),
        (
            InputSpec(224, 224, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)),
            0.018631115555763245,
            -14,
            np.int8,
        ),
        (InputSpec(32, 32, mean=(0, 0, 0), std=(255, 255, 255)), 0.0, 0, np.float32),
        (InputSpec(64, 48, colour="GRAY", mean=(127.5,), std=(127.5,)), 1 / 128, 128, np.uint8),
    ],
)
def test_fast_quantised_path_is_bit_identical_to_the_slow_one(
    spec: InputSpec, scale: float, zero: int, dtype: DTypeLike
) -> None:
    from edge.core.preprocess import preprocess_quantised

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    for y0, y1, x0, x1 in ((100, 600, 200, 900), (0, 31, 3, 50), (5, 719, 0, 1280)):
        crop = frame[y0:y1, x0:x1]
        slow = quantise(preprocess(crop, spec), scale, zero, np.dtype(dtype))
        fast = preprocess_quantised(crop, spec, scale, zero, np.dtype(dtype))
        assert fast.dtype == slow.dtype
        assert fast.shape == slow.shape
        assert np.array_equal(fast, slow)
    mask = np.zeros((500, 700), bool)
    mask[:, :350] = True
    crop = frame[100:600, 200:900]
    assert np.array_equal(
        preprocess_quantised(crop, spec, scale, zero, np.dtype(dtype), mask),
        quantise(preprocess(crop, spec, mask), scale, zero, np.dtype(dtype)),
    )
