import numpy as np
import pytest

from dmfnet_edge.errors import InputError, PairingError
from dmfnet_edge.pipeline import fuse_pixels, prepare_pair
from dmfnet_edge.postprocess.image import from_network, merge_luma
from dmfnet_edge.preprocess.color import grey_of, split_luma
from dmfnet_edge.preprocess.tensor import pad_to_multiple, to_network
from dmfnet_edge.runtime.torch_backend import TorchRunner
from tests.conftest import smooth_image


def test_luma_chroma_round_trip(rng):
    rgb = smooth_image(rng, 32, 32, colour=True)
    y, crcb = split_luma(rgb)
    back = merge_luma(y, crcb)
    assert np.abs(back.astype(int) - rgb).max() <= 2
    assert np.abs(grey_of(rgb) - y).max() <= 1
    grey = smooth_image(rng, 8, 8)
    assert split_luma(grey) == (grey, None) or np.array_equal(split_luma(grey)[0], grey)


def test_network_range_round_trip():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    x = to_network(levels)
    assert x.dtype == np.float32 and x.min() == -1 and x.max() == 1
    assert np.array_equal(from_network(x), levels)


def test_padding_to_multiples_of_16():
    img = np.arange(70 * 37, dtype=np.float32).reshape(70, 37)
    padded = pad_to_multiple(img)
    assert padded.shape == (80, 64)
    assert np.array_equal(padded[:70, :37], img)
    assert np.array_equal(padded[70, :37], img[68])  # mirrored, edge row not repeated
    assert pad_to_multiple(np.zeros((64, 80))).shape == (64, 80)
    assert pad_to_multiple(np.ones((16, 20))).shape == (64, 64)  # the network's minimum side
    assert pad_to_multiple(np.ones((1, 5))).shape == (64, 64)


def test_mismatched_and_tiny_pairs_are_rejected(rng):
    with pytest.raises(PairingError, match="co-registered"):
        prepare_pair(smooth_image(rng, 32, 32), smooth_image(rng, 32, 48))
    with pytest.raises(InputError, match="too small"):
        prepare_pair(smooth_image(rng, 8, 32), smooth_image(rng, 8, 32))


@pytest.fixture(scope="module")
def tiny_runner(tiny_model_base):
    return TorchRunner.load(str(tiny_model_base))


def test_any_size_is_fused_and_cropped_back(tiny_runner, rng):
    mri, other = smooth_image(rng, 75, 100), smooth_image(rng, 75, 100, colour=True)
    fused = fuse_pixels(tiny_runner, mri, other)
    assert fused.pixels.shape == (75, 100, 3) and fused.luma.shape == (75, 100)
    grey = fuse_pixels(tiny_runner, mri, smooth_image(rng, 75, 100))
    assert grey.pixels.shape == (75, 100)


def test_colour_output_keeps_the_functional_chroma(tiny_runner, rng):
    other = smooth_image(rng, 48, 48, colour=True)
    fused = fuse_pixels(tiny_runner, smooth_image(rng, 48, 48), other)
    _, chroma_in = split_luma(other)
    assert np.array_equal(fused.pixels, merge_luma(fused.luma, chroma_in))


def test_small_images_are_padded_to_the_network_minimum(tiny_runner, rng):
    fused = fuse_pixels(tiny_runner, smooth_image(rng, 20, 33), smooth_image(rng, 20, 33))
    assert fused.pixels.shape == (20, 33)


def test_fusing_is_bit_identical_across_runs(tiny_runner, rng):
    mri, other = smooth_image(rng, 64, 64), smooth_image(rng, 64, 64, colour=True)
    first = fuse_pixels(tiny_runner, mri, other).pixels
    assert fuse_pixels(tiny_runner, mri, other).pixels.tobytes() == first.tobytes()


def test_batches_are_cut_to_the_pixel_budget_per_call(monkeypatch, rng):
    from dmfnet_edge.pipeline import batched

    pairs = [(k, prepare_pair(smooth_image(rng, 64, 64), smooth_image(rng, 64, 64))) for k in range(7)]
    assert [len(g) for g in batched(pairs, 8)] == [7]
    monkeypatch.setenv("DMFNET_MAX_PIXELS", str(3 * 64 * 64 + 5))
    groups = list(batched(pairs, 8))
    assert [len(g) for g in groups] == [3, 3, 1] and [k for g in groups for k, _ in g] == list(range(7))
    monkeypatch.setenv("DMFNET_MAX_PIXELS", "100")  # below one image: one per call, never zero
    assert [len(g) for g in batched(pairs, 8)] == [1] * 7


def test_volume_slices_are_cut_to_the_pixel_budget_per_call(monkeypatch, rng):
    from dmfnet_edge.volume_pipeline import fuse_slices

    calls: list[int] = []

    class Recorder:
        def fuse(self, mri, other):
            calls.append(mri.shape[0])
            return np.maximum(mri, other)

    mri = np.stack([smooth_image(rng, 72, 72) for _ in range(5)])
    other = np.stack([smooth_image(rng, 72, 72) for _ in range(5)])
    monkeypatch.setenv("DMFNET_MAX_PIXELS", str(2 * 80 * 80))  # 72 pads to 80
    out = fuse_slices(Recorder(), mri, other, batch=8)
    assert calls == [2, 2, 1] and out.shape == (5, 72, 72)
    assert np.array_equal(out, np.maximum(mri, other))
