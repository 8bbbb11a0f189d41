"""The native pixel-stage kernel for PyTorch CUDA tensors: a prebuilt extension module, never compiled at run time.

`--backend gpu` used to compile it with nvcc and ninja on first use (minutes, and a toolkit on every machine that
runs it). It is built once instead, ahead of running:

    python -m dmfnet_edge.models.cuda_extension [--out DIR]      (nvcc and ninja; no GPU needed)

into DIR, by default the user cache (~/.cache/dmfnet-edge/cuda-extension/<key>); the key names the torch version,
its CUDA version and the hash of the kernel sources, so a build for another torch or older sources is never
loaded. At run time the module is loaded from DMFNET_CUDA_EXTENSION (a folder), else from the cache, and where
none is built for this torch and these sources the gpu backend refuses in one line, naming the build command.
Half-precision inputs are computed in FP32 and cast back.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from dmfnet_edge.errors import EnvironmentProblem
from dmfnet_edge.files import package_path

KERNELS = package_path("kernels", "cross_modal_attention")  # package data: works from a wheel too
SOURCES = ("torch_binding.cpp", "cma_kernels.cu")
HEADERS = ("cma_kernels.h", "cma_math.h")
NAME = "dmfnet_cma"
FOLDER = "DMFNET_CUDA_EXTENSION"
BUILD = "python -m dmfnet_edge.models.cuda_extension"


def extension_key() -> str:
    """e.g. 'torch2.11.0-cu13.0-1a2b3c4d5e6f': what the built module is only valid for."""
    digest = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        digest.update((KERNELS / name).read_bytes())
    key = f"torch{torch.__version__}-cu{torch.version.cuda or 'none'}-{digest.hexdigest()[:12]}"
    return re.sub(r"[^A-Za-z0-9.+-]", "_", key)


def default_folder() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dmfnet-edge" / "cuda-extension" / extension_key()


def built_module(folder: Path) -> Path | None:
    """The extension module file in `folder` (NAME.so, or NAME.<abi tag>.so), if there is one."""
    found = sorted(folder.glob(f"{NAME}.*so")) if folder.is_dir() else []
    return found[0] if found else None


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(NAME, path)
    if spec is None or spec.loader is None:
        raise EnvironmentProblem(f"{path}: not an extension module; rebuild it: {BUILD}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise EnvironmentProblem(f"{path}: cannot be loaded ({str(exc)[:160]}); rebuild it for this torch: "
                                 f"{BUILD} --out {path.parent}") from None
    return module


@functools.lru_cache(maxsize=1)
def load() -> ModuleType:
    """The prebuilt module for this torch and these sources (DMFNET_CUDA_EXTENSION, else the cache), or a one-line
    refusal saying how to build it. Nothing is compiled here."""
    given = os.environ.get(FOLDER)
    folder = Path(given) if given else default_folder()
    path = built_module(folder)
    if path is None:
        where = f"{FOLDER}={given}" if given else str(folder)
        raise EnvironmentProblem(f"the fused CUDA kernel for --backend gpu is not built for torch {torch.__version__} "
                                 f"(CUDA {torch.version.cuda}) and these sources (looked in {where}); build it once "
                                 f"with '{BUILD}' (nvcc and ninja), or run the PyTorch module on the GPU without "
                                 "it: --backend torch --device cuda")
    return _import(path)


def build(out: Path | None = None, verbose: bool = False) -> Path:
    """Compile the extension into `out` (default: the cache folder of this torch and these sources)."""
    if torch.version.cuda is None:
        raise EnvironmentProblem(f"torch {torch.__version__} is a CPU build: the fused kernel needs a CUDA build of "
                                 "torch to be compiled against")
    from torch.utils.cpp_extension import load as compile_and_load

    out = out or default_folder()
    out.mkdir(parents=True, exist_ok=True)
    compile_and_load(name=NAME, sources=[str(KERNELS / s) for s in SOURCES], extra_include_paths=[str(KERNELS)],
                     extra_cuda_cflags=["-O3", "--use_fast_math"], build_directory=str(out), verbose=verbose)
    path = built_module(out)
    if path is None:
        raise EnvironmentProblem(f"the build wrote no {NAME} module into {out}")
    return path


def pixel_attention_fuse(x, y, a_s, a_c, weight, bias) -> torch.Tensor:
    dtype = x.dtype
    args = [t.float() for t in (x, y, a_s, a_c, weight, bias)]
    return load().pixel_attention_fuse(*args).to(dtype)


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description="Build the fused CUDA kernel extension for --backend gpu.")
    parser.add_argument("--out", type=Path, help=f"folder to build into (default: {default_folder()})")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        path = build(args.out, args.verbose)
    except EnvironmentProblem as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 3
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
