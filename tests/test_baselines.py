"""Reference tests of the classic baselines against independent implementations (numpy and SciPy, not OpenCV):
the comparison tables and the accuracy claims against them rest on these three rules being what they say."""

import numpy as np
import pytest
from scipy.ndimage import correlate1d

from dmfnet_edge.baselines import average, fuse_with_baseline, laplacian_pyramid, pixel_max

pytestmark = pytest.mark.runtime  # also in the runtime-only tier (torch unimportable)

BURT_ADELSON = np.array([1, 4, 6, 4, 1]) / 16  # the 5x5 Gaussian of OpenCV's pyramids, separable


def _blur(x: np.ndarray) -> np.ndarray:
    # SciPy's "mirror" border is OpenCV's default BORDER_REFLECT_101 (d c b | a b c d)
    return correlate1d(correlate1d(x, BURT_ADELSON, axis=0, mode="mirror"), BURT_ADELSON, axis=1, mode="mirror")


def _reduce(x: np.ndarray) -> np.ndarray:
    return _blur(x)[::2, ::2]


def _expand(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    upsampled = np.zeros(shape)
    upsampled[::2, ::2] = x
    return 4 * _blur(upsampled)


def _reference_laplacian(a: np.ndarray, b: np.ndarray, levels: int = 4) -> np.ndarray:
    def pyramid(img):
        gaussian = [img.astype(np.float64)]
        for _ in range(levels - 1):
            gaussian.append(_reduce(gaussian[-1]))
        return [f - _expand(c, f.shape) for f, c in zip(gaussian[:-1], gaussian[1:])] + [gaussian[-1]]

    pa, pb = pyramid(a), pyramid(b)
    out = (pa[-1] + pb[-1]) / 2  # coarsest band: mean
    for x, y in zip(reversed(pa[:-1]), reversed(pb[:-1])):  # detail bands: larger magnitude wins
        out = _expand(out, x.shape) + np.where(np.abs(x) >= np.abs(y), x, y)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.fixture
def pair():
    rng = np.random.default_rng(21)
    yy, xx = np.mgrid[0:96, 0:128]
    a = np.clip(128 + 90 * np.sin(xx / 9) * np.cos(yy / 13) + rng.normal(0, 12, xx.shape), 0, 255)
    b = np.clip(60 + 150 * np.exp(-((xx - 80) ** 2 + (yy - 40) ** 2) / 600) + rng.normal(0, 6, xx.shape), 0, 255)
    return a.astype(np.uint8), b.astype(np.uint8)


def test_average_is_the_rounded_mean_of_every_pixel(pair):
    a, b = pair
    expected = [[round((int(x) + int(y)) / 2) for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]  # half to even
    assert np.array_equal(average(a, b), np.array(expected, np.uint8))


def test_max_is_the_brighter_source_of_every_pixel(pair):
    a, b = pair
    assert np.array_equal(pixel_max(a, b), np.where(a >= b, a, b))


def test_laplacian_pyramid_matches_an_independent_burt_adelson_pyramid(pair):
    a, b = pair
    fused, expected = laplacian_pyramid(a, b), _reference_laplacian(a, b)
    assert np.abs(fused.astype(int) - expected.astype(int)).max() <= 1  # float rounding at .5 only
    assert np.mean(fused != expected) < 1e-3


@pytest.mark.parametrize("shape", [(96, 128), (67, 45)])
def test_laplacian_pyramid_of_an_image_with_itself_is_the_image(shape):
    image = np.random.default_rng(2).integers(0, 256, shape).astype(np.uint8)
    assert np.array_equal(laplacian_pyramid(image, image), image)  # perfect reconstruction, odd sizes too


def test_baselines_fuse_luma_and_keep_the_colour_of_the_functional_image(pair):
    a, b = pair
    colour = np.stack([b, b // 2, 255 - b], axis=-1)
    for method in ("average", "max", "laplacian"):
        fused = fuse_with_baseline(method, a, colour)
        assert fused.shape == colour.shape and fused.dtype == np.uint8
    grey = fuse_with_baseline("max", a, b)
    assert np.array_equal(grey, pixel_max(a, b))
