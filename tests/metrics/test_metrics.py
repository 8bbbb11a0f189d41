import json
import math

import numpy as np
import pytest
from sewar.full_ref import vifp
from skimage.metrics import structural_similarity
from sklearn.metrics import mutual_info_score

from dmfnet_edge.io.images import read_image
from dmfnet_edge.metrics import fusion
from dmfnet_edge.metrics.filters import box_mean_reflect, convolve3x3_same
from dmfnet_edge.preprocess.color import grey_of

pytestmark = pytest.mark.runtime  # also in the runtime-only tier (torch unimportable)


def _images(rng, n=3, size=(64, 80)):
    import cv2

    out = []
    for _ in range(n):
        img = cv2.GaussianBlur(rng.random(size), (0, 0), 2)
        out.append(np.round((img - img.min()) / np.ptp(img) * 255))
    return out


def test_reproduces_the_reference_fixture_table(metric_fixtures):
    spec = json.loads(metric_fixtures.read_text())
    folder = metric_fixtures.parent / "metric_fixtures"
    for case in spec["cases"]:
        g = {k: grey_of(read_image(folder / case[k])) for k in ("mri", "other", "fused")}
        values = fusion.fusion_metrics(g["fused"], g["mri"], g["other"])
        for name, expected in case["metrics"].items():
            assert values[name] == pytest.approx(expected, rel=1e-5), (case["fused"], name)


def test_ssim_matches_scikit_image(rng):
    f, a, b = _images(rng)
    expected = structural_similarity(f, a, data_range=255) + structural_similarity(f, b, data_range=255)
    assert fusion.ssim(f, a, b) == pytest.approx(expected, rel=1e-9)


def test_vif_matches_sewar_vifp(rng):
    f, a, b = _images(rng, size=(96, 96))
    assert fusion.vif(f, a, b) == pytest.approx(vifp(a, f) + vifp(b, f), rel=1e-6)


def test_mi_matches_scikit_learn_in_nats(rng):
    f, a, b = _images(rng)
    expected = mutual_info_score(f.ravel(), a.ravel()) + mutual_info_score(f.ravel(), b.ravel())
    assert fusion.mutual_information(f, a, b) == pytest.approx(expected, rel=1e-9)


def test_hand_computed_values():
    half = np.zeros((4, 4))
    half[:, 2:] = 255
    assert fusion.entropy(half) == pytest.approx(1.0)  # two equally likely levels = 1 bit
    assert fusion.std_dev(half) == pytest.approx(127.5)
    # one jump of 255 per row in 3 column differences per row; no row differences
    assert fusion.spatial_frequency(half) == pytest.approx(math.sqrt(255**2 / 3))
    a, b = np.full((8, 8), 100.0), np.full((8, 8), 140.0)
    f = np.full((8, 8), 120.0)
    assert fusion.psnr(f, a, b) == pytest.approx(10 * math.log10(120**2 / 400))
    ramp = np.tile(np.arange(8.0), (8, 1))
    assert fusion.average_gradient(ramp) == pytest.approx(math.sqrt(0.5))
    assert fusion.correlation(ramp, ramp, 2 * ramp + 1) == pytest.approx(1.0)


def test_perfect_copy_scores(rng):
    a, b = _images(rng, 2)
    steps = np.zeros((32, 32))
    steps[:, 16:] = 200.0
    # F = A, B flat: only A's edges count; the evaluator's quirk makes the strength ratio g_F (>> 1 on edges)
    q_max = 0.9994 * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert fusion.qabf(steps, steps, np.zeros_like(steps)) == pytest.approx(q_max, rel=1e-6)
    assert fusion.ssim(a, a, a) == pytest.approx(2.0)
    assert fusion.vif(a, a, a) == pytest.approx(2.0)
    assert fusion.scd(a + b, a, b) == pytest.approx(2.0)


def test_constant_images_do_not_crash():
    z = np.zeros((32, 32))
    values = fusion.fusion_metrics(z, z, z)
    assert values["CC"] == 0.0 and values["Qabf"] == 0.0 and values["EN"] == 0.0
    assert all(not math.isnan(v) for v in values.values())


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="shapes differ"):
        fusion.fusion_metrics(np.zeros((4, 4)), np.zeros((4, 5)), np.zeros((4, 4)))


def test_filters_agree_with_scipy(rng):
    from scipy.ndimage import uniform_filter
    from scipy.signal import convolve2d

    img = rng.random((20, 17)) * 255
    k = rng.random((3, 3))
    assert np.allclose(convolve3x3_same(img, k), convolve2d(img, k, mode="same"))
    assert np.allclose(box_mean_reflect(img, 7), uniform_filter(img, 7, mode="reflect"))
