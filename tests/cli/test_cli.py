"""The `dmfnet` command line, run in-process: outputs, reports, one-line errors and exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dmfnet_edge.cli.main import main
from dmfnet_edge.io.images import read_image, write_image
from tests.conftest import smooth_image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pairs_dir(tmp_path, rng) -> Path:
    root = tmp_path / "pairs"
    for task, modality, colour in [("MRI-CT", "CT", False), ("MRI-PET", "PET", True)]:
        for name in ("01", "02"):
            write_image(root / task / "MRI" / f"{name}.png", smooth_image(rng, 64, 64))
            write_image(root / task / modality / f"{name}.png", smooth_image(rng, 64, 64, colour))
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fuse_writes_grey_for_ct_and_rgb_for_pet(capsys, pairs_dir, tmp_path, tiny_model_base):
    for task, modality, ndim in [("MRI-CT", "CT", 2), ("MRI-PET", "PET", 3)]:
        out = tmp_path / f"{task}.png"
        code, stdout, _ = run(capsys, "fuse", "--mri", str(pairs_dir / task / "MRI" / "01.png"), "--other",
                              str(pairs_dir / task / modality / "01.png"), "-o", str(out), "--model",
                              str(tiny_model_base), "--backend", "torch")
        assert code == 0 and out.is_file() and "torch" in stdout
        assert read_image(out).ndim == ndim


def test_fuse_dir_then_eval(capsys, pairs_dir, tmp_path, tiny_model_base):
    out = tmp_path / "fused"
    code, stdout, _ = run(capsys, "fuse-dir", "--pairs", str(pairs_dir), "--out", str(out), "--model",
                          str(tiny_model_base), "--batch", "2", "--metrics")
    assert code == 0 and stdout.startswith("fused 4 pairs with model tiny on torch (fp32): ")
    lines = stdout.strip().splitlines()
    assert len(lines) == 4 and lines[1].split()[:3] == ["MRI-CT", "Qabf", lines[1].split()[2]]
    assert lines[-1] == f"wrote {out}/: MRI-X/NAME.png, report.md, report.json, overview.png (all eleven metrics in " \
                        "report.md)"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("0*.png")) == [
        "MRI-CT/01.png", "MRI-CT/02.png", "MRI-PET/01.png", "MRI-PET/02.png"]
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["pairs"] == 4 and set(report["summary"]["metrics"]) == {"MRI-CT", "MRI-PET"}
    assert (out / "overview.png").is_file() and "![overview]" in (out / "report.md").read_text()
    code, stdout, _ = run(capsys, "eval", "--pairs", str(pairs_dir), "--fused", str(out), "--json",
                          str(tmp_path / "m.json"))
    assert code == 0 and "| MRI-PET |" in stdout and "conventions: cdd" in stdout
    evaluated = json.loads((tmp_path / "m.json").read_text())
    assert evaluated["tasks"]["MRI-CT"]["Qabf"] == pytest.approx(report["summary"]["metrics"]["MRI-CT"]["Qabf"])


def test_batched_and_single_fusion_agree(capsys, pairs_dir, tmp_path, tiny_model_base):
    for batch in ("1", "4"):
        run(capsys, "fuse-dir", "--pairs", str(pairs_dir), "--out", str(tmp_path / batch), "--model",
            str(tiny_model_base), "--batch", batch)
    singles = sorted((tmp_path / "1").glob("*/*.png"))
    expected = sorted(f"{p.parent.parent.name}/{p.name}" for p in pairs_dir.glob("*/MRI/*.png"))
    assert singles and [str(p.relative_to(tmp_path / "1")) for p in singles] == expected
    for path in singles:
        other = tmp_path / "4" / path.relative_to(tmp_path / "1")
        assert np.abs(read_image(path).astype(int) - read_image(other)).max() <= 1


def test_baseline_command(capsys, pairs_dir, tmp_path):
    code, _, _ = run(capsys, "baseline", "--method", "max", "--pairs", str(pairs_dir), "--out", str(tmp_path / "b"))
    assert code == 0
    mri = read_image(pairs_dir / "MRI-CT" / "MRI" / "01.png")
    ct = read_image(pairs_dir / "MRI-CT" / "CT" / "01.png")
    assert np.array_equal(read_image(tmp_path / "b" / "MRI-CT" / "01.png"), np.maximum(mri, ct))


@pytest.mark.parametrize("case", ["missing", "mismatch", "bad_output", "not_image", "bad_model"])
def test_user_errors_are_one_line_exit_2_and_write_nothing(capsys, pairs_dir, tmp_path, rng, tiny_model_base, case):
    mri = pairs_dir / "MRI-CT" / "MRI" / "01.png"
    other = pairs_dir / "MRI-CT" / "CT" / "01.png"
    out = tmp_path / "o" / "fused.png"
    model = str(tiny_model_base)
    if case == "missing":
        other = tmp_path / "nope.png"
    elif case == "mismatch":
        other = write_image(tmp_path / "small.png", smooth_image(rng, 32, 48))
    elif case == "bad_output":
        out = tmp_path / "o" / "fused.gif"
    elif case == "not_image":
        other = tmp_path / "notes.png"
        other.write_text("hello")
    else:
        model = str(tmp_path / "no-model")
    code, _, err = run(capsys, "fuse", "--mri", str(mri), "--other", str(other), "-o", str(out), "--model", model)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("dmfnet: error: ") and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_tampered_weights_are_refused(capsys, tmp_path, tiny_model_base, pairs_dir):
    import shutil

    for suffix in (".safetensors", ".json"):
        shutil.copy(tiny_model_base.with_suffix(suffix), tmp_path / f"m{suffix}")
    data = bytearray((tmp_path / "m.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "m.safetensors").write_bytes(bytes(data))
    code, _, err = run(capsys, "fuse", "--mri", str(pairs_dir / "MRI-CT" / "MRI" / "01.png"), "--other",
                       str(pairs_dir / "MRI-CT" / "CT" / "01.png"), "-o", str(tmp_path / "f.png"), "--model",
                       str(tmp_path / "m"))
    assert code == 2 and "does not match" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fuse", "--mri", "x.png"])
    assert exc.value.code == 2
    assert "required" in capsys.readouterr().err


def test_info_reports_parameters_and_flops(capsys, tiny_model_base):
    code, stdout, _ = run(capsys, "info", "--model", str(tiny_model_base), "--size", "64")
    info = json.loads(stdout)
    assert code == 0 and info["model"] == "tiny" and info["parameters"]["unet"] > 0
    assert info["gflop_per_pair_64"]["total"] > 0


PERMISSIONS_SCRIPT = """
import os, stat, sys
from pathlib import Path
os.umask(int(sys.argv[2], 8))
import numpy as np
from dmfnet_edge.io.images import write_image
from dmfnet_edge.files import FOLDER_MODE
out = Path(sys.argv[1])
write_image(out / "fused.png", np.zeros((64, 64), np.uint8))
print(oct(stat.S_IMODE((out / "fused.png").stat().st_mode)), oct(FOLDER_MODE))
"""


@pytest.mark.parametrize("umask, mode", [("022", "0o644"), ("027", "0o640"), ("077", "0o600")])
def test_outputs_get_the_permissions_of_the_umask(tmp_path, umask, mode):
    """Written through a temporary file and a rename, outputs used to be 0600 whatever the umask."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", PERMISSIONS_SCRIPT, str(tmp_path), umask], capture_output=True,
                            text=True, check=True)
    file_mode, folder_mode = result.stdout.split()
    assert file_mode == mode and folder_mode == oct(0o777 & ~int(umask, 8))


def test_fuse_dir_json_and_an_overview_of_every_modality(capsys, pairs_dir, tmp_path, tiny_model_base):
    from dmfnet_edge.io.pairs import find_pairs
    from dmfnet_edge.reporting.report import overview_sample

    code, stdout, _ = run(capsys, "fuse-dir", "--pairs", str(pairs_dir), "--out", str(tmp_path / "out"), "--model",
                          str(tiny_model_base), "--json")
    assert code == 0 and json.loads(stdout)["pairs"] == 4
    pairs = find_pairs(pairs_dir)
    assert [p.task for p in pairs] == ["MRI-CT", "MRI-CT", "MRI-PET", "MRI-PET"]
    assert [(p.task, p.name) for p in overview_sample(pairs, 3)] == [("MRI-CT", "01"), ("MRI-PET", "01"),
                                                                    ("MRI-CT", "02")]


def test_progress_off_a_terminal_is_plain_periodic_lines(capsys, monkeypatch):
    from dmfnet_edge.cli.progress import PlainProgress, bar

    assert isinstance(bar(3, "quick", "pair"), PlainProgress)  # capsys' stderr is no terminal
    with bar(3, "quick", "pair") as quick:
        quick.update(3)
    assert capsys.readouterr().err == ""  # short work adds nothing
    with PlainProgress(4, "fusing", "pair", every_s=0.0) as slow:
        slow.set_postfix({"loss": "0.1234"})
        for _ in range(4):
            slow.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("fusing: 1/4 pairs (25 %), ") and lines[0].endswith("; loss 0.1234")
    assert len(lines) == 5 and lines[-1].startswith("fusing: 4/4 pairs (100 %)")
    from dmfnet_edge.cli.progress import PLAIN_EVERY_S, plain_interval

    for value, expected in (("2.5", 2.5), ("0", PLAIN_EVERY_S), ("soon", PLAIN_EVERY_S)):
        monkeypatch.setenv("DMFNET_PROGRESS_SECONDS", value)
        assert plain_interval() == expected


def test_suspicious_pairings_are_warned_about(caplog, rng):
    from dmfnet_edge.pipeline import prepare_pair

    grey, colour = smooth_image(rng, 64, 64), smooth_image(rng, 64, 64, colour=True)
    with caplog.at_level("WARNING"):
        prepare_pair(colour, grey, "p")
        prepare_pair(grey, grey.copy(), "q")
        prepare_pair(grey, colour, "fine")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "were --mri and --other swapped?" in messages[0] and "identical" in messages[1]


def test_options_are_checked_at_parse_time(capsys):
    for argv in (["fuse-dir", "--pairs", "d", "--out", "o", "--batch", "0"], ["fuse", "--mri", "a", "--other", "b",
                 "-o", "c.png", "--threads", "-2"], ["fuse", "--mri", "a", "--other", "b", "-o", "c.png", "--device",
                 "banana"], ["train", "stage1", "--data", "d", "--out", "o", "--steps", "x"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith(f"dmfnet: error: {argv[0]}: argument"), \
            (argv, err)
    from dmfnet_edge.cli.main import export_main

    for argv in (["onnx", "-o", "o", "--opset", "99"], ["onnx", "-o", "o", "--batch", "0"],
                 ["calibrate", "--pairs", "p", "-o", "c.json", "--per-modality", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            export_main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and "out of range" in err[0], (argv, err)
        assert err[0].startswith(f"dmfnet-export: error: {argv[0]}: argument"), err


def test_a_full_stdout_is_one_line_not_a_traceback():
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "dmfnet_edge.cli.main", "info", "--model", "tiny"], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 3 and result.stderr == "dmfnet: error: standard output: No space left on device\n"


def test_an_optional_package_missing_deep_in_a_command_is_one_line(capsys, monkeypatch):
    import dmfnet_edge.cli.info_cmd as info_cmd

    def needs_safetensors(args):
        raise ModuleNotFoundError("No module named 'safetensors'", name="safetensors")

    monkeypatch.setattr(info_cmd, "COMMANDS", {"info": (info_cmd.configure, needs_safetensors)})
    code = main(["info"])
    err = capsys.readouterr().err
    assert code == 3 and err == ("dmfnet: error: this command needs the package 'safetensors'; install it with: "
                                 "pip install 'dmfnet-edge[train]'\n")


def test_fuse_dir_with_file_names_that_are_not_utf8(capsys, tmp_path, rng, tiny_model_base):
    import os

    root = tmp_path / "pairs"
    name = os.fsdecode(b"caf\xe9-\xff")  # Latin-1 bytes: not UTF-8, a surrogate escape in Python
    for side in ("MRI", "CT"):
        write_image(root / "MRI-CT" / side / f"{name}.png", smooth_image(rng, 64, 64))
    code, stdout, _ = run(capsys, "fuse-dir", "--pairs", str(root), "--out", str(tmp_path / "out"), "--model",
                          str(tiny_model_base))
    assert code == 0 and (tmp_path / "out" / "MRI-CT" / f"{name}.png").is_file()
    assert read_image(tmp_path / "out" / "overview.png").shape[2] == 3


def test_a_preset_name_never_fuses_with_random_weights_on_any_backend(tmp_path, capsys):
    """'paper' and 'tiny' have no shipped weights: every backend refuses them (the gpu one used to build random
    weights silently); benchmarks that want the paper size at random ask for it explicitly."""
    from dmfnet_edge.cli.main import main
    from dmfnet_edge.io.images import write_image

    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, rng.integers(0, 256, (64, 64), dtype=np.uint8))
    for backend in ("gpu", "torch", "onnxruntime"):
        code = main(["fuse", "--mri", str(tmp_path / "a.png"), "--other", str(tmp_path / "b.png"), "-o",
                     str(tmp_path / f"{backend}.png"), "--backend", backend, "--model", "paper"])
        err = capsys.readouterr().err
        assert code == 2, (backend, err)
        assert err.count("\n") == 1 and "paper" in err
    assert not list(tmp_path.glob("gpu.png")) and not list(tmp_path.glob("torch.png"))


def test_fuse_dir_says_which_pairs_it_kept_when_a_later_pair_fails(capsys, tmp_path, rng, tiny_model_base):
    pairs = tmp_path / "pairs" / "MRI-CT"
    for name in ("01", "02", "03"):
        write_image(pairs / "MRI" / f"{name}.png", smooth_image(rng, 64, 64))
        write_image(pairs / "CT" / f"{name}.png", smooth_image(rng, 64, 64))
    (pairs / "CT" / "03.png").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    code, _, err = run(capsys, "fuse-dir", "--pairs", str(tmp_path / "pairs"), "--out", str(out), "--model",
                       str(tiny_model_base))
    assert code == 2 and err.count("\n") == 1 and "03.png: not a readable image" in err
    kept = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert kept and kept == ["01.png", "02.png"][:len(kept)]  # pairs are read one ahead of the one fused
    assert f"; {len(kept)} of 3 pairs were fused before it and are complete in {out} (no report was written)" in err


def _closing(*fds: int):
    """preexec_fn of a child started as `COMMAND >&-` (fd 1) or `2>&-` (fd 2)."""
    import os

    return lambda: [os.close(fd) for fd in fds]


def test_a_closed_stdout_is_one_line_and_no_file_takes_its_place(tmp_path):
    """`>&-`: a command that prints fails with one line, exit 3 (it was a traceback); descriptors the caller closed
    are reopened on /dev/null first, so that no output file gets number 1 or 2 and native prints land elsewhere."""
    import subprocess
    import sys

    from tests.conftest import REPO

    listing = [sys.executable, "-m", "dmfnet_edge.cli.main", "info", "--model", "tiny"]
    result = subprocess.run(listing, stderr=subprocess.PIPE, text=True, timeout=300, preexec_fn=_closing(1))
    assert result.returncode == 3 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("dmfnet: error: standard output: is closed")
    probe = ("import os, sys; from dmfnet_edge.cli.main import _guard_standard_streams; _guard_standard_streams(); "
             "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT); sys.stderr.write(str(fd)); sys.exit(fd)")
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "f")], cwd=REPO, capture_output=True,
                            timeout=60, preexec_fn=_closing(1, 2))
    assert result.returncode > 2 and not result.stdout and not result.stderr  # stderr went to /dev/null
    result = subprocess.run([*listing[:3], "info", "--model", str(tmp_path / "missing")], stdout=subprocess.PIPE,
                            text=True, timeout=300, preexec_fn=_closing(2))
    assert result.returncode == 2 and result.stdout == ""  # the error line is not printed on stdout instead


_WARN_THEN = """
import logging, sys, warnings
from dmfnet_edge.cli.main import run_cli
from dmfnet_edge.errors import InputError


def run(args):
    warnings.warn("a third-party library warns", UserWarning)
    logging.getLogger("onnxruntime").warning("a third-party logger warns")
    logging.getLogger("dmfnet_edge.engines.trt_builder").warning("TensorRT: relayed", extra={"third_party": True})
    print("done")
    if sys.argv[1] == "fail":
        raise InputError("the one line")
    return 0


sys.exit(run_cli(sys.argv[2:], "dmfnet-export", [("probe", "probe", lambda p: None, run)]))
"""


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_third_party_warnings_never_precede_the_error_line(verbose):
    """Python warnings, other packages' loggers and relayed TensorRT messages: held while the command runs,
    dropped when it fails (the one error line is all of stderr), shown when it succeeds; -v holds nothing."""
    import subprocess
    import sys

    def probe(outcome):
        return subprocess.run([sys.executable, "-c", _WARN_THEN, outcome, *verbose, "probe"], capture_output=True,
                              text=True, timeout=120)

    failed, succeeded = probe("fail"), probe("ok")
    assert failed.returncode == 2 and succeeded.returncode == 0
    warned = ["a third-party library warns", "a third-party logger warns", "TensorRT: relayed"]
    assert all(w in succeeded.stderr for w in warned), succeeded.stderr
    if verbose:
        assert all(w in failed.stderr for w in warned), failed.stderr
    else:
        assert failed.stderr == "dmfnet-export: error: the one line\n"


def test_a_line_break_in_any_message_stays_on_one_line(capsys):
    """Flattened where the CLI prints, for every command: a parse error quoting a value, a third-party message."""
    from dmfnet_edge.cli.main import export_main, run_cli
    from dmfnet_edge.errors import EnvironmentProblem

    with pytest.raises(SystemExit):
        export_main(["build", "--onnx", "g.onnx", "--out", "o", "--toolchain", "tensor\nrt"])
    assert capsys.readouterr().err.count("\n") == 1

    def fails(args):
        raise EnvironmentProblem("TensorRT said:\nline two\r\nline three")

    assert run_cli(["probe"], "dmfnet-export", [("probe", "probe", lambda p: None, fails)]) == 3
    assert capsys.readouterr().err == "dmfnet-export: error: TensorRT said: line two  line three\n"


def test_recipe_list_checks_targets_in_any_spelling(tmp_path, capsys):
    """The compute capabilities a recipe names are checked against what TensorRT for RTX can target, after
    they are read in the one spelling (8.6 is sm86); a target it has not is refused before anything is listed."""
    from dmfnet_edge.cli.main import export_main
    from tests.conftest import REPO

    text = (REPO / "export" / "workstation-rtx-fp16.yaml").read_text()
    recipe = tmp_path / "workstation-rtx-fp16.yaml"
    recipe.write_text(text.replace("[sm80, sm86, sm89, sm120]", '["8.6", sm89]'))
    assert export_main(["recipe", "--list", str(recipe)]) == 0
    assert "tensorrt-rtx engine for sm86,sm89" in capsys.readouterr().out
    recipe.write_text(text.replace("[sm80, sm86, sm89, sm120]", "[sm86, sm100]"))
    assert export_main(["recipe", "--list", str(recipe)]) == 2
    out, err = capsys.readouterr()
    assert not out and "engine.compute_capabilities sm100: tensorrt-rtx targets sm75, sm80" in err


# ---- the command registry: every entry loads, names are unique, one broken module breaks only itself ------------
def test_every_registered_command_has_its_module_entry_and_examples():
    from dmfnet_edge.cli.examples import EXAMPLES
    from dmfnet_edge.cli.registry import TOOLS, load

    for tool, spec in TOOLS.items():
        for entry in spec.entries:
            command = load(entry)
            assert command.configure is not None and command.run.__module__ == f"dmfnet_edge.cli.{entry.module}", \
                f"{tool} {entry.name}: its module did not load"
            assert EXAMPLES[tool].get(entry.name), f"{tool} {entry.name}: no --help examples"
    modules = {e.module for spec in TOOLS.values() for e in spec.entries}
    for module in modules:  # every command a module defines is registered
        from importlib import import_module

        defined = set(import_module(f"dmfnet_edge.cli.{module}").COMMANDS)
        assert defined <= {e.name for spec in TOOLS.values() for e in spec.entries}, module


def test_a_repeated_command_name_is_refused(monkeypatch):
    from dmfnet_edge.cli import registry

    doubled = registry.Tool("t", (registry.Entry("x", "a", ""), registry.Entry("x", "b", "")))
    monkeypatch.setitem(registry.TOOLS, "dmfnet", doubled)
    with pytest.raises(ValueError, match="registered twice: \\['x'\\]"):
        registry.check_registry()


def test_a_broken_command_module_breaks_only_that_command(monkeypatch, capsys):
    """An internal import error (a misspelt dmfnet_edge module) is a bug: its command shows the traceback; --help
    and the other commands are unaffected (the registry imports only the command being run)."""
    from dmfnet_edge.cli import registry

    broken = registry.Entry("broken", "no_such_cmd", "a command whose module does not exist")
    tool = registry.TOOLS["dmfnet"]
    monkeypatch.setitem(registry.TOOLS, "dmfnet", tool._replace(entries=(*tool.entries, broken)))
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "broken" in capsys.readouterr().out
    assert main(["info", "--model", "tiny", "--size", "64"]) == 0
    with pytest.raises(ModuleNotFoundError, match="dmfnet_edge.cli.no_such_cmd"):
        main(["broken"])


def test_a_missing_internal_module_keeps_its_traceback(monkeypatch):
    """Only third-party packages become 'install the extra' (exit 3); a misspelt internal import is re-raised."""
    from dmfnet_edge.cli.main import run_cli

    def run(args):
        import dmfnet_edge.no_such_module  # noqa: F401

    with pytest.raises(ModuleNotFoundError):
        run_cli(["probe"], "dmfnet", [("probe", "probe", lambda p: None, run)])

    def optional(args):
        import no_such_third_party_package  # noqa: F401

    assert run_cli(["probe"], "dmfnet", [("probe", "probe", lambda p: None, optional)]) == 3


def test_running_a_command_imports_only_its_module():
    code = ("import sys; from dmfnet_edge.cli.main import main\n"
            "try:\n    main(['eval', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('dmfnet_edge.cli.') and m.endswith('_cmd')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip().splitlines()[-1] == "['dmfnet_edge.cli.eval_cmd']", done.stdout + done.stderr
