"""Training both stages on generated pairs: checkpoints, resume, reports and the split guard."""

import json

import pytest
import torch
from safetensors.torch import load_file

from dmfnet_edge.artifacts import WeightsSidecar
from dmfnet_edge.cli.main import main
from dmfnet_edge.io.images import write_image
from tests.conftest import needs, smooth_image


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    import numpy as np

    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("data") / "train"
    for task, modality, colour in [("MRI-CT", "CT", False), ("MRI-SPECT", "SPECT", True)]:
        for name in ("a", "b", "c"):
            write_image(root / task / "MRI" / f"{name}.png", smooth_image(rng, 72, 72))
            write_image(root / task / modality / f"{name}.png", smooth_image(rng, 72, 72, colour))
    return root


def _train(tmp, stage, steps, *extra):
    argv = ["train", stage, "--preset", "tiny", "--out", str(tmp), "--steps", str(steps), "--batch", "2",
            "--crop", "64", "--checkpoint-every", "2", *extra]
    return main(argv)


def test_stage1_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, train_dir):
    assert _train(tmp_path / "straight", "stage1", 4, "--data", str(train_dir)) == 0
    assert _train(tmp_path / "split", "stage1", 2, "--data", str(train_dir)) == 0
    assert _train(tmp_path / "split", "stage1", 4, "--data", str(train_dir), "--resume") == 0
    a = load_file(str(tmp_path / "straight" / "unet.safetensors"))
    b = load_file(str(tmp_path / "split" / "unet.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta = WeightsSidecar.read(tmp_path / "straight" / "unet.json")
    assert meta.kind == "unet" and meta.training["settings"]["steps"] == 4


def test_stage2_trains_only_the_fusion_network_and_reports(tmp_path, train_dir, capsys, monkeypatch):
    from dmfnet_edge.train import trainer

    initial = {}

    class RecordedStage2(trainer.Stage2Task):
        """Stage II as the command builds it, with the fusion network's starting weights kept for comparison."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            initial.update({k: v.detach().clone() for k, v in self.model.fusion.state_dict().items()})

    monkeypatch.setattr(trainer, "Stage2Task", RecordedStage2)
    assert _train(tmp_path / "s1", "stage1", 2, "--data", str(train_dir)) == 0
    code = _train(tmp_path / "s2", "stage2", 3, "--data", str(train_dir), "--unet", str(tmp_path / "s1" / "unet"),
                  "--val", str(train_dir.parent / "train"), "--lr", "1e-3")
    # the guard refuses --val equal to --data
    assert code == 2 and "same folder" in capsys.readouterr().err
    val = train_dir.parent / "holdout"
    import shutil

    shutil.copytree(train_dir, val)
    assert _train(tmp_path / "s2", "stage2", 3, "--data", str(train_dir), "--unet",
                  str(tmp_path / "s1" / "unet"), "--val", str(val), "--lr", "1e-3") == 0
    printed = capsys.readouterr().out.strip().splitlines()  # a short summary, not the whole report
    assert printed[0].startswith("weights: ") and printed[1] == f"curves: {tmp_path / 's2' / 'curves.png'}"
    assert printed[2] == "validation (mean per modality):" and printed[-1].startswith("full report: ")
    assert len(printed) == 8 and printed[5].startswith("| MRI-CT |")
    unet = load_file(str(tmp_path / "s1" / "unet.safetensors"))
    model = load_file(str(tmp_path / "s2" / "dmfnet.safetensors"))
    assert all(torch.equal(unet[k], model[f"unet.{k}"]) for k in unet)  # frozen
    fusion = {k.removeprefix("fusion."): v for k, v in model.items() if k.startswith("fusion.")}
    assert initial and fusion.keys() == initial.keys()
    unmoved = [k for k in fusion if torch.equal(fusion[k], initial[k])]
    assert unmoved == []  # three Adam steps move every fusion weight (all of them get gradients)
    report = json.loads((tmp_path / "s2" / "val_report.json").read_text())
    assert set(report["tasks"]) == {"MRI-CT", "MRI-SPECT"} and report["counts"]["MRI-CT"] == 3
    from dmfnet_edge.models.checkpoint import load_model

    loaded, meta = load_model(tmp_path / "s2" / "dmfnet")
    assert meta.kind == "dmfnet" and loaded.cfg.name == "tiny"


def test_training_refuses_the_val_split(tmp_path, capsys):
    val = tmp_path / "val"
    val.mkdir()
    assert _train(tmp_path / "x", "stage1", 1, "--data", str(val)) == 2
    assert "refusing" in capsys.readouterr().err


def test_stage2_needs_a_unet(tmp_path, train_dir, capsys):
    assert _train(tmp_path / "x", "stage2", 1, "--data", str(train_dir)) == 2
    assert "--unet" in capsys.readouterr().err


def test_the_ablation_figure_draws_every_run_against_pixel_max(tmp_path):
    needs("matplotlib", "dev")
    from dmfnet_edge.io.images import read_image
    from dmfnet_edge.train.curves import plot_ablation

    runs = {}
    for k, label in enumerate(("with", "without")):
        validation = [{"step": s, "score": 1.8 - 0.01 * k * s / 100, "loss": {"MRI-CT": 0.3 - 0.01 * s / 100,
                                                                             "MRI-PET": 0.2},
                       "baseline_loss": {"max": {"MRI-CT": 0.31, "MRI-PET": 0.15}}} for s in (100, 200, 300)]
        (tmp_path / label).mkdir()
        (tmp_path / label / "last.json").write_text(json.dumps({
            "step": 300, "stage": "dmfnet", "optimizer": {"param_groups": []}, "numpy_rng": {}, "settings": {},
            "validation": validation}))
        runs[label] = tmp_path / label
    out = plot_ablation(runs, tmp_path / "ablation.png", "title")
    picture = read_image(out)
    assert picture.ndim == 3 and picture.shape[1] > 3 * picture.shape[0]  # three panels side by side
    assert not (tmp_path / "with" / "curves.png").exists()  # the run folders are only read
