"""Stage-II feature cache and the long-run recipe: cache equivalence, stale-cache refusal, atomic builds,
schedules, EMA, the source skip, checkpoint selection and exact resume with all of it."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dmfnet_edge.cli.main import main
from dmfnet_edge.config import PRESETS
from dmfnet_edge.errors import InputError
from dmfnet_edge.io.images import write_image
from dmfnet_edge.io.pairs import find_pairs
from dmfnet_edge.models.dmfnet import DMFNet
from dmfnet_edge.preprocess.tensor import to_network
from dmfnet_edge.train.feature_cache import FeatureCache
from dmfnet_edge.train.selection import rank_score
from dmfnet_edge.train.trainer import TrainSettings, learning_rate, load_fusion_weights
from tests.conftest import smooth_image

SIDE = 96


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("cachedata")
    for split, names in (("train", "abcd"), ("holdout", "xy")):
        for task, modality, colour in [("MRI-CT", "CT", False), ("MRI-PET", "PET", True)]:
            for name in names:
                write_image(root / split / task / "MRI" / f"{name}.png", smooth_image(rng, SIDE, SIDE))
                write_image(root / split / task / modality / f"{name}.png", smooth_image(rng, SIDE, SIDE, colour))
    return root


def _model(seed=0, skip=False, gate=False):
    torch.manual_seed(seed)
    cfg = PRESETS["tiny"]
    if skip:
        import dataclasses

        cfg = dataclasses.replace(cfg, fusion=dataclasses.replace(cfg.fusion, source_skip=True, max_gate=gate))
    return DMFNet(cfg).eval()


def test_cached_crops_are_the_full_image_features_cropped(tmp_path, pairs_dir):
    model = _model()
    pairs = find_pairs(pairs_dir / "train")
    cache = FeatureCache.open_or_build(tmp_path / "c", model, pairs)
    assert len(cache) == len(pairs) and cache.grid == 16
    batch = cache.sample(np.random.default_rng(0), 3, 64)
    assert batch.mri.shape == (3, 1, 64, 64)
    # find every sampled crop in the full-image features of a live pass: same pixels, features within fp16
    rng = np.random.default_rng(0)
    picks = [int(rng.integers(len(cache))) for _ in range(3)]
    corners = [(16 * int(rng.integers(3)), 16 * int(rng.integers(3))) for _ in range(3)]
    from dmfnet_edge.io.images import read_image
    from dmfnet_edge.preprocess.color import split_luma

    for i, (k, (y, x)) in enumerate(zip(picks, corners)):
        mri = torch.from_numpy(to_network(split_luma(read_image(pairs[k].mri))[0]))[None, None]
        other = torch.from_numpy(to_network(split_luma(read_image(pairs[k].other))[0]))[None, None]
        assert torch.equal(batch.mri[i, 0], mri[0, 0, y:y + 64, x:x + 64])
        assert torch.equal(batch.other[i, 0], other[0, 0, y:y + 64, x:x + 64])
        with torch.no_grad():
            live_m, live_o = model.features(mri, other)
        for level, (fm, fo) in enumerate(zip(live_m, live_o)):
            f = SIDE // fm.shape[-1]
            want_m = fm[0, :, y // f:(y + 64) // f, x // f:(x + 64) // f]
            want_o = fo[0, :, y // f:(y + 64) // f, x // f:(x + 64) // f]
            # float16 storage: relative error 2^-11 of the value, plus subnormal rounding near 0
            assert torch.allclose(batch.mri_feats[level][i], want_m, rtol=1e-3, atol=1e-4), level
            assert torch.allclose(batch.other_feats[level][i], want_o, rtol=1e-3, atol=1e-4), level


def test_a_fused_image_from_cached_features_matches_the_live_model(tmp_path, pairs_dir):
    model = _model(3, skip=True)
    with torch.no_grad():
        model.fusion.head.conv1.weight.normal_()  # the source skip must matter in this test
    cache = FeatureCache.open_or_build(tmp_path / "c", model, find_pairs(pairs_dir / "train"))
    whole = cache.full(2)
    with torch.no_grad():
        cached = model.fuse((whole.mri_feats, whole.other_feats), whole.mri, whole.other)
        live = model(whole.mri, whole.other)
    assert cached.shape == live.shape == (1, 1, SIDE, SIDE)
    assert float((cached - live).abs().max()) < 2e-3


def test_a_cache_is_reused_and_refused_when_stale(tmp_path, pairs_dir):
    model = _model()
    pairs = find_pairs(pairs_dir / "train")
    folder = tmp_path / "c"
    FeatureCache.open_or_build(folder, model, pairs)
    from dmfnet_edge.files import FOLDER_MODE

    assert folder.stat().st_mode & 0o777 == FOLDER_MODE  # not the build folder's 0700
    stamp = (folder / "level0.npy").stat().st_mtime_ns
    again = FeatureCache.open_or_build(folder, model, pairs)  # reused, not rebuilt
    assert len(again) == len(pairs) and (folder / "level0.npy").stat().st_mtime_ns == stamp
    other_unet = _model(seed=1)
    with pytest.raises(InputError, match=r"stale feature cache: built for unet_sha256"):
        FeatureCache.open_or_build(folder, other_unet, pairs)
    with pytest.raises(InputError, match=r"stale feature cache: built from other data \(it holds 8 pairs, the "
                                         r"data has 7\)"):
        FeatureCache.open_or_build(folder, model, pairs[:-1])
    data = tmp_path / "edited"
    shutil.copytree(pairs_dir / "train", data)
    edited = data / "MRI-PET" / "PET" / "b.png"
    write_image(edited, smooth_image(np.random.default_rng(5), SIDE, SIDE, True))
    with pytest.raises(InputError, match=r"built from other data \(1 pairs differ, e.g. MRI-PET/b\)"):
        FeatureCache.open_or_build(folder, model, find_pairs(data))
    assert (folder / "level0.npy").stat().st_mtime_ns == stamp  # a refusal touches nothing
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a feature cache"):
        FeatureCache.open_or_build(tmp_path / "busy", model, pairs)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_an_interrupted_build_leaves_nothing_behind(tmp_path, pairs_dir, monkeypatch):
    model = _model()
    calls = {"n": 0}
    real = model.features

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "features", failing)
    with pytest.raises(KeyboardInterrupt):
        FeatureCache.open_or_build(tmp_path / "c", model, find_pairs(pairs_dir / "train"))
    assert list(tmp_path.iterdir()) == []


def test_cache_refuses_odd_sizes_and_off_grid_crops(tmp_path, pairs_dir):
    model = _model()
    data = tmp_path / "odd"
    shutil.copytree(pairs_dir / "train", data)
    rng = np.random.default_rng(2)
    write_image(data / "MRI-CT" / "MRI" / "a.png", smooth_image(rng, 80, 80))
    write_image(data / "MRI-CT" / "CT" / "a.png", smooth_image(rng, 80, 80))
    with pytest.raises(InputError, match="a feature cache holds one image size"):
        FeatureCache.open_or_build(tmp_path / "c1", model, find_pairs(data))
    cache = FeatureCache.open_or_build(tmp_path / "c2", model, find_pairs(pairs_dir / "train"))
    with pytest.raises(InputError, match="multiple of 16"):
        cache.sample(np.random.default_rng(0), 2, 40)
    with pytest.raises(InputError, match="at least 64"):  # the attention's 7x7 reflection padding needs 4 cells
        cache.sample(np.random.default_rng(0), 2, 48)


def test_learning_rate_schedules():
    s = TrainSettings(steps=100, batch_size=1, crop=16, lr=1.0, schedule="cosine", warmup=10, min_lr_ratio=0.1)
    assert learning_rate(s, 0) == pytest.approx(0.1) and learning_rate(s, 9) == pytest.approx(1.0)
    assert learning_rate(s, 10) == pytest.approx(1.0)
    assert learning_rate(s, 55) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(s, 100) == pytest.approx(0.1)
    flat = TrainSettings(steps=100, batch_size=1, crop=16, lr=0.5)
    assert {learning_rate(flat, k) for k in (0, 50, 99)} == {0.5}


def test_a_source_skip_head_starts_as_the_network_without_it():
    plain, skip = _model(4), _model(5, skip=True)
    load_fusion_weights(skip.fusion, plain.fusion.state_dict())
    skip.unet.load_state_dict(plain.unet.state_dict())
    x, y = torch.rand(2, 1, 1, SIDE, SIDE) * 2 - 1
    with torch.no_grad():
        assert torch.equal(plain(x, y), skip(x, y))
    assert skip.fusion.head.conv1.weight.shape[1] == plain.fusion.head.conv1.weight.shape[1] + 2
    with pytest.raises(ValueError, match="cannot start a head"):
        load_fusion_weights(plain.fusion, skip.fusion.state_dict())


def test_a_max_gate_starts_nearly_closed_and_opens_to_the_brighter_source():
    from dmfnet_edge.models.fusion import GATE_CLOSED

    skip, gated = _model(4, skip=True), _model(5, skip=True, gate=True)
    gated.fusion.head.close_gate()
    load_fusion_weights(gated.fusion, skip.fusion.state_dict())  # the skip network's weights, its own gate
    gated.unet.load_state_dict(skip.unet.state_dict())
    x, y = torch.rand(2, 1, 1, SIDE, SIDE) * 2 - 1
    brighter = torch.maximum(x, y)
    with torch.no_grad():
        plain, blended = skip(x, y), gated(x, y)
        closed = torch.sigmoid(torch.tensor(GATE_CLOSED))
        assert torch.allclose(blended, plain + closed * (brighter - plain), atol=1e-6)
        assert not torch.equal(blended, plain)
        gated.fusion.head.gate.bias.fill_(40.0)  # wide open: the brighter source, pixel for pixel
        assert torch.allclose(gated(x, y), brighter, atol=1e-6)
        gated.fusion.head.gate.bias.fill_(-40.0)  # shut: the network without the gate
        assert torch.allclose(gated(x, y), plain, atol=1e-6)
    import dataclasses

    bad = dataclasses.replace(PRESETS["tiny"].fusion, max_gate=True)
    with pytest.raises(ValueError, match="max_gate needs fusion.source_skip"):
        dataclasses.replace(PRESETS["tiny"], fusion=bad).check()


def test_rank_score_and_the_acceptance_bar():
    from dmfnet_edge.metrics.fusion import METRIC_NAMES

    ours = {"T": {m: 2.0 for m in METRIC_NAMES}}
    base = {"average": {"T": {m: 1.0 for m in METRIC_NAMES}}, "max": {"T": {m: 3.0 for m in METRIC_NAMES}},
            "laplacian": {"T": {m: 1.0 for m in METRIC_NAMES}}}
    score, details = rank_score(ours, base)
    assert score == 2.0 and details["meets_bar"] == {"T": True}
    assert details["margin"] == pytest.approx(-1 / 3, abs=1e-5)  # 2.0 against the best baseline's 3.0 in every cell
    base["laplacian"]["T"]["VIF"] = 2.5  # losing VIF to the Laplacian fails the bar whatever else is won
    score, details = rank_score(ours, base)
    assert score == pytest.approx(2 + 1 / 11) and details["meets_bar"] == {"T": False}
    assert "VIF" not in details["wins"]["T"]["laplacian"]


def test_equal_ranks_are_decided_by_the_margin():
    from dmfnet_edge.train.selection import better

    first = {"score": 2.03, "margin": -0.10}
    assert better(first, None)
    assert better({"score": 2.03, "margin": -0.05}, first)  # same rank, closer to the best baseline: better
    assert not better({"score": 2.03, "margin": -0.10}, first)  # a full tie keeps the earlier step
    assert not better({"score": 2.06, "margin": 0.50}, first)  # rank first


def _stage2(tmp, data, unet, steps, *extra):
    return main(["train", "stage2", "--preset", "tiny", "--data", str(data), "--unet", str(unet), "--out", str(tmp),
                 "--steps", str(steps), "--batch", "2", "--crop", "64", "--checkpoint-every", "2", "--lr", "1e-3",
                 *extra])


def test_cached_training_with_validation_resumes_exactly(tmp_path, pairs_dir, tiny_model_base, capsys):
    unet = tiny_model_base
    opts = ["--feature-cache", str(tmp_path / "cache"), "--val", str(pairs_dir / "holdout"), "--val-every", "2",
            "--schedule", "cosine", "--warmup", "1", "--ema", "0.9"]
    assert _stage2(tmp_path / "straight", pairs_dir / "train", unet, 4, *opts) == 0
    out = capsys.readouterr().out
    assert "best: " in out and "validation score" in out
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["train", "val"]
    assert _stage2(tmp_path / "split", pairs_dir / "train", unet, 2, *opts) == 0
    assert _stage2(tmp_path / "split", pairs_dir / "train", unet, 4, *opts, "--resume") == 0
    for name in ("dmfnet.safetensors", "last.safetensors", "best.safetensors"):
        a, b = load_file(str(tmp_path / "straight" / name)), load_file(str(tmp_path / "split" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    last = json.loads((tmp_path / "split" / "last.json").read_text())
    assert [v["step"] for v in last["validation"]] == [2, 4]
    assert set(last["validation"][0]["loss"]) == {"MRI-CT", "MRI-PET"}
    assert set(last["validation"][0]["baseline_loss"]) == {"average", "max", "laplacian"}
    assert last["history"][-1]["step"] == 4 and "lr" in last["history"][-1]
    assert any(k.startswith("ema.") for k in load_file(str(tmp_path / "split" / "last.safetensors")))
    best = json.loads((tmp_path / "split" / "best.json").read_text())
    assert best["training"]["selected"]["step"] == last["best"]["step"]


def test_stage2_option_errors(tmp_path, pairs_dir, tiny_model_base, capsys):
    code = _stage2(tmp_path / "r", pairs_dir / "train", tiny_model_base, 2, "--val-every", "5")
    assert code == 2 and "--val-every needs --val" in capsys.readouterr().err
    code = main(["train", "stage1", "--data", str(pairs_dir / "train"), "--out", str(tmp_path / "s1"),
                 "--feature-cache", str(tmp_path / "c")])
    assert code == 2 and "stage2 options" in capsys.readouterr().err
    code = _stage2(tmp_path / "r", pairs_dir / "train", tiny_model_base, 2, "--ema", "1.5")
    assert code == 2 and "--ema 1.5" in capsys.readouterr().err
    code = main(["train", "stage1", "--data", str(pairs_dir / "train"), "--out", str(tmp_path / "s1"),
                 "--no-max-gate"])
    assert code == 2 and "--no-max-gate: stage2 options" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_no_max_gate_trains_the_head_without_it_and_refuses_gated_starting_weights(tmp_path, pairs_dir, capsys):
    from dmfnet_edge.models.checkpoint import load_model, save_model

    gated = _model(6, skip=True, gate=True)
    base = save_model(gated, gated.cfg, tmp_path / "gated", "dmfnet", {})
    plain = _model(6, skip=True)
    plain_base = save_model(plain, plain.cfg, tmp_path / "plain", "dmfnet", {})
    common = ["train", "stage2", "--data", str(pairs_dir / "train"), "--steps", "1", "--batch", "1", "--crop",
              "64", "--threads", "1"]
    assert main([*common, "--out", str(tmp_path / "ok"), "--unet", str(base), "--init", str(plain_base),
                 "--no-max-gate"]) == 0
    trained, _ = load_model(tmp_path / "ok" / "dmfnet")
    assert not trained.cfg.fusion.max_gate and trained.fusion.head.gate is None
    assert main([*common, "--out", str(tmp_path / "gated-run"), "--unet", str(base), "--init", str(plain_base)]) == 0
    assert load_model(tmp_path / "gated-run" / "dmfnet")[0].fusion.head.gate is not None  # the checkpoint's own
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "bad"), "--unet", str(base), "--init", str(base),
                 "--no-max-gate"]) == 2
    assert "have a max gate and this fusion network has none" in capsys.readouterr().err


def test_sigterm_during_a_cache_build_leaves_no_half_cache(tmp_path, tiny_model_base):
    import os
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(3)
    data = tmp_path / "train"
    for name in range(40):
        write_image(data / "MRI-CT" / "MRI" / f"{name}.png", smooth_image(rng, 256, 256))
        write_image(data / "MRI-CT" / "CT" / f"{name}.png", smooth_image(rng, 256, 256))
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "dmfnet_edge.cli.main", "train", "stage2", "--preset", "tiny",
                             "--data", str(data), "--unet", str(tiny_model_base), "--out", str(tmp_path / "run"),
                             "--feature-cache", str(cache), "--steps", "1", "--crop", "64", "--threads", "1"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.name.startswith(".train.partial-") and
                                                  (p / "luma.npy").exists() for p in cache.glob(".*")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "dmfnet: terminated; no partial outputs were kept"
    assert list(cache.iterdir()) == []  # neither a cache nor its hidden build folder


def test_fewer_timesteps_start_from_folded_merges_and_train(tmp_path, pairs_dir, capsys):
    import dataclasses

    from dmfnet_edge.models.checkpoint import load_model, save_model

    three = _model(7, skip=True, gate=True)
    one = DMFNet(dataclasses.replace(three.cfg, fusion=dataclasses.replace(three.cfg.fusion, timesteps=(5,)))).eval()
    load_fusion_weights(one.fusion, three.fusion.state_dict())
    x, y = torch.rand(2, 1, 1, SIDE, SIDE) * 2 - 1
    with torch.no_grad():
        f1 = one.features(x, y)
        # the same features at every level of the three-level network: the folded one computes the same function
        f3 = tuple([torch.cat([f] * 3, dim=1) for f in side] for side in f1)
        assert torch.allclose(three.fuse(f3, x, y), one.fuse(f1, x, y), atol=1e-5)
    name = "merge.0.body.0.weight"
    assert one.fusion.state_dict()[name].shape[1] * 3 == three.fusion.state_dict()[name].shape[1]
    with pytest.raises(ValueError, match="cannot start a merge"):
        load_fusion_weights(three.fusion, one.fusion.state_dict())  # a merge is folded, never widened

    base = save_model(three, three.cfg, tmp_path / "three", "dmfnet", {})
    common = ["train", "stage2", "--data", str(pairs_dir / "train"), "--steps", "1", "--batch", "1", "--crop",
              "64", "--threads", "1", "--unet", str(base), "--init", str(base)]
    assert main([*common, "--out", str(tmp_path / "one"), "--timesteps", "5"]) == 0
    trained, _ = load_model(tmp_path / "one" / "dmfnet")
    assert trained.cfg.fusion.timesteps == (5,) and trained.gammas.shape == (1,)
    capsys.readouterr()
    for bad, message in (("5,5", "distinct levels in increasing order"), ("20,5", "increasing order"),
                         ("0", "0 is out of range"), ("five", "'five' is not a whole number"),
                         ("3000", "3000 is out of range")):
        with pytest.raises(SystemExit) as stop:  # argparse's usage error, at parse time
            main([*common, "--out", str(tmp_path / "bad"), "--timesteps", bad])
        assert stop.value.code == 2 and message in capsys.readouterr().err, bad
    assert main(["train", "stage1", "--data", str(pairs_dir / "train"), "--out", str(tmp_path / "s1"),
                 "--timesteps", "5"]) == 2
    assert "--timesteps: stage2 options" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "s1").exists()
