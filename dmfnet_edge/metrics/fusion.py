"""The eleven fusion metrics under the "cdd" conventions (CDDFuse / DM-FNet Python evaluator), numpy only.

Inputs are grey images as float64 (H, W) in 0..255 (`preprocess.color.grey_of`): A = MRI, B = other, F = fused.
Conventions ("cdd"): EN in bits; MI in nats, summed over both sources; VIF = pixel-domain VIFp (sigma_n^2 = 2)
summed over both sources (scales too coarse for a small image are left out); Qabf = Xydeas-Petrovic with the
evaluator's quirk (strength ratio = g_F where g_A == g_F); SSIM = skimage SSIM (7x7 uniform window, sample
covariance, data_range 255) summed over both sources; PSNR = 10 log10(max(F)^2 / mean(MSE(A,F), MSE(B,F)));
CC = mean of the two Pearson correlations;
SCD = corr(A, F - B) + corr(B, F - A). An undefined correlation (a constant image) counts as 0.
Higher is better for all eleven.
"""

from __future__ import annotations

import math

import numpy as np

from dmfnet_edge.metrics.filters import box_mean_reflect, convolve3x3_same, gaussian_taps, separable_valid

METRIC_MIN_SIDE = 7  # SSIM's 7x7 window; smaller images give NaN or no gradient at all
METRIC_NAMES = ("EN", "SD", "SF", "AG", "MI", "VIF", "Qabf", "SSIM", "PSNR", "CC", "SCD")
CONVENTIONS = ("cdd: grey = round(BT.601 luma) 0..255; EN bits; MI nats, sum over sources; VIF = VIFp "
               "(sigma_n^2=2), sum; Qabf Xydeas-Petrovic (evaluator quirk); SSIM skimage 7x7, data_range=255, "
               "sum; PSNR 10log10(max(F)^2/mean MSE); CC mean of two; SCD sum of two")


def entropy(f: np.ndarray) -> float:
    counts = np.bincount(np.round(f).astype(np.uint8).ravel(), minlength=256)
    p = counts[counts > 0] / f.size
    return float(-(p * np.log2(p)).sum())


def std_dev(f: np.ndarray) -> float:
    return float(np.std(f))


def spatial_frequency(f: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.diff(f, axis=1) ** 2) + np.mean(np.diff(f, axis=0) ** 2)))


def average_gradient(f: np.ndarray) -> float:
    gy, gx = np.gradient(f)
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2)))


def _mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """MI in nats between two images of integer grey levels 0..255 (each level a label)."""
    joint = np.bincount((x.astype(np.int64) * 256 + y.astype(np.int64)).ravel(), minlength=65536)
    joint = joint.reshape(256, 256).astype(np.float64) / x.size
    px, py = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / np.outer(px, py)[nz])).sum())


def mutual_information(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    fi, ai, bi = (np.round(v).astype(np.int64) for v in (f, a, b))
    return _mutual_information(fi, ai) + _mutual_information(fi, bi)


def _vifp(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0, eps: float = 1e-10) -> float:
    """Pixel-domain VIF of `dist` against `ref` over 4 scales; NaN (nothing to measure) counts as 1."""
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        taps = gaussian_taps(n, n / 5.0)
        if scale > 1:
            ref = separable_valid(ref, taps)[::2, ::2]
            dist = separable_valid(dist, taps)[::2, ::2]
        if min(ref.shape) < n:  # image too small for this scale: the coarser scales are left out
            break
        mu1, mu2 = separable_valid(ref, taps), separable_valid(dist, taps)
        s1 = np.maximum(separable_valid(ref * ref, taps) - mu1 * mu1, 0)
        s2 = np.maximum(separable_valid(dist * dist, taps) - mu2 * mu2, 0)
        s12 = separable_valid(ref * dist, taps) - mu1 * mu2
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        flat_ref = s1 < eps
        g[flat_ref], sv[flat_ref], s1[flat_ref] = 0, s2[flat_ref], 0
        flat_dist = s2 < eps
        g[flat_dist], sv[flat_dist] = 0, 0
        negative = g < 0
        sv[negative], g[negative] = s2[negative], 0
        sv = np.maximum(sv, eps)
        num += float(np.sum(np.log10(1 + g * g * s1 / (sv + sigma_nsq))))
        den += float(np.sum(np.log10(1 + s1 / sigma_nsq)))
    value = num / den if den else math.nan
    return 1.0 if math.isnan(value) else value


def vif(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return _vifp(a, f) + _vifp(b, f)


_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
_SOBEL_Y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float64)


def _edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = convolve3x3_same(img, _SOBEL_X), convolve3x3_same(img, _SOBEL_Y)
    strength = np.sqrt(gx * gx + gy * gy)
    angle = np.full(img.shape, math.pi / 2)
    nz = gx != 0
    angle[nz] = np.arctan(gy[nz] / gx[nz])
    return strength, angle


def _edge_preservation(ga: np.ndarray, aa: np.ndarray, gf: np.ndarray, af: np.ndarray) -> np.ndarray:
    ratio = np.where(ga > gf, gf / np.where(ga > gf, ga, 1), np.where(ga < gf, ga / np.where(ga < gf, gf, 1), gf))
    orient = 1 - np.abs(aa - af) / (math.pi / 2)
    q_g = 0.9994 / (1 + np.exp(-15 * (ratio - 0.5)))
    q_a = 0.9879 / (1 + np.exp(-22 * (orient - 0.8)))
    return q_g * q_a


def qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    (ga, aa), (gb, ab), (gf, af) = _edges(a), _edges(b), _edges(f)
    den = float(np.sum(ga + gb))
    if den == 0:
        return 0.0
    num = np.sum(_edge_preservation(ga, aa, gf, af) * ga + _edge_preservation(gb, ab, gf, af) * gb)
    return float(num / den)


def _ssim(x: np.ndarray, y: np.ndarray, data_range: float = 255.0, win: int = 7) -> float:
    cov_norm = win * win / (win * win - 1)
    ux, uy = box_mean_reflect(x, win), box_mean_reflect(y, win)
    vx = cov_norm * (box_mean_reflect(x * x, win) - ux * ux)
    vy = cov_norm * (box_mean_reflect(y * y, win) - uy * uy)
    vxy = cov_norm * (box_mean_reflect(x * y, win) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def ssim(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return _ssim(f, a) + _ssim(f, b)


def psnr(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    mse = (np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2
    peak = float(np.max(f))
    if mse == 0:
        return math.inf
    return float(10 * np.log10(peak * peak / mse)) if peak > 0 else -math.inf


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
    return float(np.sum(dx * dy)) / den if den > 0 else 0.0


def correlation(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return (_corr(a, f) + _corr(b, f)) / 2


def scd(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return _corr(a, f - b) + _corr(b, f - a)


def fusion_metrics(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """All eleven metrics of fused grey F against sources A (MRI) and B (other), in METRIC_NAMES order."""
    if not (f.shape == a.shape == b.shape):
        raise ValueError(f"shapes differ: fused {f.shape}, A {a.shape}, B {b.shape}")
    f, a, b = (np.asarray(v, np.float64) for v in (f, a, b))
    return {
        "EN": entropy(f), "SD": std_dev(f), "SF": spatial_frequency(f), "AG": average_gradient(f),
        "MI": mutual_information(f, a, b), "VIF": vif(f, a, b), "Qabf": qabf(f, a, b), "SSIM": ssim(f, a, b),
        "PSNR": psnr(f, a, b), "CC": correlation(f, a, b), "SCD": scd(f, a, b),
    }
