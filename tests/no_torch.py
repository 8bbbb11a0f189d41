"""Make torch unimportable in this process, as on a runtime-only install: `import torch` raises ImportError.

A finder at the front of sys.meta_path refuses the package, so nothing of torch is ever loaded, while libraries
that look torch up in sys.modules to see whether it is in use (SciPy's array API layer does) find it absent, as
they would on a machine without it (a None entry in sys.modules would break them)."""

from __future__ import annotations

import importlib.abc
import sys


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 (the finder protocol)
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named '{name}' (torch is unimportable in this runtime-only test)",
                              name=name)
        return None


def block() -> None:
    if not any(isinstance(f, NoTorch) for f in sys.meta_path):
        sys.meta_path.insert(0, NoTorch())


block()
