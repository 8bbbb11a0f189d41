"""Property-based tests: readers, preprocessing and argument handling never fail with anything but a clear
DmfnetError (or argparse's exit 2), whatever bytes or values they get."""

import contextlib
import io
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dmfnet_edge.cli.main import main
from dmfnet_edge.errors import InputError
from dmfnet_edge.io.images import decode_image, encode_image
from dmfnet_edge.io.loader import load_image
from dmfnet_edge.pipeline import prepare_pair
from dmfnet_edge.postprocess.image import crop_to, from_network
from dmfnet_edge.preprocess.tensor import pad_to_multiple, to_network

pytestmark = pytest.mark.runtime  # also in the runtime-only tier (torch unimportable)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEED_PNG = encode_image(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8), ".png")
SEED_JPG = encode_image(np.random.default_rng(1).integers(0, 256, (40, 40), dtype=np.uint8), ".jpg")
SEED_DCM = (Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm").read_bytes()


def _mutate(seed: bytes, data: st.DataObject) -> bytes:
    out = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del out[pos:pos + data.draw(st.integers(1, 64))]
        else:
            out[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    return bytes(out)


def _check_image(pixels: np.ndarray) -> None:
    assert pixels.dtype == np.uint8 and pixels.ndim in (2, 3)
    assert pixels.ndim == 2 or pixels.shape[2] == 3


@FAST
@given(st.binary(max_size=2048))
def test_decoder_on_random_bytes(blob):
    with contextlib.suppress(InputError):
        _check_image(decode_image(blob, "fuzz"))


# The share of mutants that must still decode to an image: a reader that refused every file would pass the fuzz
# checks alone. Measured: JPEG mutants decode at least 7.7 % of the time in 300 runs (median 28 %); DICOM ones at
# least 6 % in 160 runs of 150 mutants (median 15 %; with 60 a run, as few as 2 of 60). PNG has no bound: libpng's
# CRC and zlib checks refuse nearly every mutant of a seed of random pixels (median 1 %, none in one run of six).
MIN_DECODED_SHARE = {"jpg": 0.03, "dcm": 0.02}


def _check_decoded_share(tally: Counter, kind: str) -> None:
    share = tally[kind, "decoded"] / max(tally[kind, "drawn"], 1)
    assert share >= MIN_DECODED_SHARE[kind], f"{kind}: {tally[kind, 'decoded']} of {tally[kind, 'drawn']} decoded"


def test_decoder_on_mutated_images():
    seeds, tally = {"png": SEED_PNG, "jpg": SEED_JPG}, Counter()

    @FAST
    @given(st.sampled_from(sorted(seeds)), st.data())
    def decode_a_mutant(kind, data):
        tally[kind, "drawn"] += 1
        with contextlib.suppress(InputError):
            _check_image(decode_image(_mutate(seeds[kind], data), "fuzz"))
            tally[kind, "decoded"] += 1

    decode_a_mutant()
    _check_decoded_share(tally, "jpg")


def test_dicom_reader_on_mutated_files(tmp_path):
    path, tally = tmp_path / "x.dcm", Counter()

    @FAST
    @given(st.data())
    def read_a_mutant(data):
        tally["dcm", "drawn"] += 1
        path.write_bytes(_mutate(SEED_DCM, data))
        with contextlib.suppress(InputError):
            _check_image(load_image(path).pixels)
            tally["dcm", "decoded"] += 1

    read_a_mutant()
    _check_decoded_share(tally, "dcm")


@FAST
@given(arrays(np.float32, st.tuples(st.integers(1, 90), st.integers(1, 90)),
              elements=st.floats(-1, 1, width=32)))
def test_padding_round_trip(values):
    padded = pad_to_multiple(values)
    assert padded.shape[0] % 16 == 0 and padded.shape[1] % 16 == 0 and min(padded.shape) >= 64
    assert np.array_equal(crop_to(padded, *values.shape), values)


@FAST
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_network_range_round_trip(levels):
    assert np.array_equal(from_network(to_network(levels)), levels)


@FAST
@given(st.tuples(st.integers(1, 80), st.integers(1, 80)), st.tuples(st.integers(1, 80), st.integers(1, 80)),
       st.booleans())
def test_prepare_pair_accepts_or_refuses_cleanly(a_shape, b_shape, colour):
    a = np.zeros(a_shape, np.uint8)
    b = np.zeros((*b_shape, 3) if colour else b_shape, np.uint8)
    try:
        prepared = prepare_pair(a, b)
    except InputError:
        return
    assert prepared.mri.shape == prepared.other.shape and (prepared.chroma is not None) == colour


WORDS = ["fuse", "fuse-dir", "fuse-volume", "eval", "baseline", "compare", "info", "train", "stage1", "--mri",
         "--other", "-o", "--model", "--backend", "--batch", "--pairs", "--out", "--threads", "--window-other",
         "--precision", "torch", "onnxruntime", "auto", "int8", "-1", "0", "3", "x.png", "40,400", "nope", "--help"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=8))
def test_argument_handling_never_crashes(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
            code = exc.code
    assert code in (0, 1, 2, 3), err.getvalue()
    assert "Traceback" not in err.getvalue()
