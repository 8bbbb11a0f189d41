"""Model configuration: frozen dataclasses, three presets and a JSON round trip.

Presets:
* ``paper``: the published sizes (UNet 20,670,081 and fusion network 3,026,640 parameters).
* ``edge``: the compact shipped default for CPUs and embedded consoles.
* ``tiny``: a few thousand parameters, for tests.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dmfnet_edge.artifacts import SHIPPED
from dmfnet_edge.errors import ModelFileError
from dmfnet_edge.records import parse_json

CONFIG_VERSION = 1


@dataclass(frozen=True)
class UNetConfig:
    """Stage-I UNet (SR3 style, x0 prediction, conditioned on the continuous noise level gamma)."""

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 128
    channel_mults: tuple[int, ...] = (1, 1, 1, 1, 2)
    res_blocks: int = 2
    norm_groups: int = 32
    dropout: float = 0.2
    embedding_channels: int | None = None  # width of the noise-level embedding; None = base_channels

    @property
    def levels(self) -> int:
        return len(self.channel_mults)

    @property
    def emb_channels(self) -> int:
        return self.embedding_channels or self.base_channels

    def level_channels(self, level: int) -> int:
        return self.base_channels * self.channel_mults[level]


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule; only decides which gamma = sqrt(alpha_bar) an integer t maps to."""

    schedule: str = "linear"
    timesteps: int = 2000
    linear_start: float = 1e-6
    linear_end: float = 1e-2


@dataclass(frozen=True)
class FusionConfig:
    """Stage-II fusion network on the UNet decoder features at the noise levels of `timesteps`."""

    timesteps: tuple[int, ...] = (5, 10, 20)
    head_channels: int = 64
    attention_reduction: int = 8
    noise_tile: int = 256  # side of the stored noise field, tiled for larger images
    noise_seed: int = 20250318
    # edge deviation: both source images are a zero-initialised extra input of the head's first convolution
    source_skip: bool = False
    # edge deviation: a per-pixel gate blends the head's output towards max(A, B) (needs the source skip)
    max_gate: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a DM-FNet model; stored as JSON next to the weights."""

    name: str
    unet: UNetConfig = field(default_factory=UNetConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"config_version": CONFIG_VERSION, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build and check a config (structure, types and values) before anything is built from it."""
        try:
            if not isinstance(data, dict):
                raise TypeError(f"expected an object, got {type(data).__name__}")
            version = data.get("config_version", CONFIG_VERSION)
            if version != CONFIG_VERSION:
                raise ModelFileError(f"model config version {version} is not supported (expected {CONFIG_VERSION})")
            for part in ("unet", "fusion", "diffusion"):
                if not isinstance(data.get(part), dict):
                    raise TypeError(f"'{part}' must be an object")
            cfg = cls(
                name=str(data["name"]),
                unet=_build(UNetConfig, data["unet"]),
                fusion=_build(FusionConfig, data["fusion"]),
                diffusion=_build(DiffusionConfig, data["diffusion"]),
            )
            cfg.check()
            return cfg
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"model config is malformed ({type(exc).__name__}: {exc}); "
                                 "regenerate it with the training or export command") from None

    def check(self) -> None:
        """ValueError/TypeError naming the first field whose type or value no model can be built from."""
        u, f, d = self.unet, self.fusion, self.diffusion
        for name, value in (("unet.in_channels", u.in_channels), ("unet.out_channels", u.out_channels),
                            ("unet.base_channels", u.base_channels), ("unet.res_blocks", u.res_blocks),
                            ("unet.norm_groups", u.norm_groups), ("fusion.head_channels", f.head_channels),
                            ("fusion.attention_reduction", f.attention_reduction), ("fusion.noise_tile", f.noise_tile),
                            ("diffusion.timesteps", d.timesteps)):
            _positive_int(name, value)
        if u.embedding_channels is not None:
            _positive_int("unet.embedding_channels", u.embedding_channels)
        if not isinstance(u.channel_mults, tuple) or not u.channel_mults:
            raise ValueError("unet.channel_mults must be a non-empty list of positive integers")
        for mult in u.channel_mults:
            _positive_int("unet.channel_mults[]", mult)
        for level in range(u.levels):
            if u.level_channels(level) % u.norm_groups:
                raise ValueError(f"unet.norm_groups {u.norm_groups} must divide every level's width "
                                 f"({u.level_channels(level)} at level {level})")
        if not _number(u.dropout) or not 0.0 <= u.dropout < 1.0:
            raise ValueError(f"unet.dropout must be a number in [0, 1), got {u.dropout!r}")
        if d.schedule not in ("linear", "cosine"):
            raise ValueError(f"diffusion.schedule must be 'linear' or 'cosine', got {d.schedule!r}")
        if not (_number(d.linear_start) and _number(d.linear_end) and 0 < d.linear_start < d.linear_end < 1):
            raise ValueError(f"diffusion.linear_start/linear_end must satisfy 0 < start < end < 1, got "
                             f"{d.linear_start!r}, {d.linear_end!r}")
        if not isinstance(f.timesteps, tuple) or not f.timesteps:
            raise ValueError("fusion.timesteps must be a non-empty list of integers")
        for t in f.timesteps:
            _positive_int("fusion.timesteps[]", t)
            if t > d.timesteps:
                raise ValueError(f"fusion.timesteps: {t} is beyond diffusion.timesteps {d.timesteps}")
        if f.noise_tile % 16:
            raise ValueError(f"fusion.noise_tile must be a multiple of 16, got {f.noise_tile}")
        if not isinstance(f.noise_seed, int) or isinstance(f.noise_seed, bool) or f.noise_seed < 0:
            raise ValueError(f"fusion.noise_seed must be a non-negative integer, got {f.noise_seed!r}")
        if not isinstance(f.source_skip, bool):
            raise ValueError(f"fusion.source_skip must be true or false, got {f.source_skip!r}")
        if not isinstance(f.max_gate, bool):
            raise ValueError(f"fusion.max_gate must be true or false, got {f.max_gate!r}")
        if f.max_gate and not f.source_skip:
            raise ValueError("fusion.max_gate needs fusion.source_skip (the gate blends towards the sources' max)")

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        data = parse_json(text.encode(), "model config")
        if not isinstance(data, dict):
            raise ModelFileError("model config must be a JSON object")
        return cls.from_dict(data)


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _build(kind: type, values: dict[str, Any]) -> Any:
    """Instantiate a config dataclass from JSON values, turning lists back into tuples."""
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {kind.__name__} keys {sorted(unknown)}")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(name="paper"),
    "edge": ModelConfig(
        name="edge",
        unet=UNetConfig(base_channels=16, channel_mults=(1, 2, 2, 4, 4), res_blocks=1, norm_groups=8,
                        dropout=0.1),
        # edge deviation: one noise level (t = 5) instead of three: two UNet passes per pair instead of six, the
        # same quality on val (docs/MODEL_CARD.md, "One noise level")
        fusion=FusionConfig(timesteps=(5,), head_channels=32, attention_reduction=4, source_skip=True,
                            max_gate=True),
    ),
    "tiny": ModelConfig(
        name="tiny",
        unet=UNetConfig(base_channels=8, channel_mults=(1, 1, 2, 2, 2), res_blocks=1, norm_groups=4, dropout=0.0),
        fusion=FusionConfig(head_channels=8, attention_reduction=4, noise_tile=64),
    ),
}


def preset(name: str) -> ModelConfig:
    """Return a named preset or raise an InputError listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        from dmfnet_edge.errors import InputError

        raise InputError(f"unknown model preset '{name}'; choose one of {sorted(PRESETS)} or give a weights path") \
            from None


ModelKind = Literal["shipped", "preset", "weights", "onnx", "engine", "server"]


@dataclass(frozen=True)
class ModelSpec:
    """What `--model` (or `--server`) names, parsed once: a shipped model ('edge'), a preset ('paper', 'tiny':
    seeded random weights, for sizes, graphs and timings), saved weights (PATH to NAME.safetensors + NAME.json),
    an exported graph (FILE.onnx), a TensorRT engine (FILE.engine), or a Triton server (URL). The backend registry
    (runtime/backends.py) and the weight loader decide by its kind, never by testing the text again."""

    text: str
    kind: ModelKind

    @classmethod
    def parse(cls, text: str | os.PathLike[str], server: str | None = None) -> ModelSpec:
        if server is not None:
            return cls(server, "server")
        text = str(text)
        if text in SHIPPED:
            return cls(text, "shipped")
        if text in PRESETS:
            return cls(text, "preset")
        suffix = Path(text).suffix
        return cls(text, {".onnx": "onnx", ".engine": "engine"}.get(suffix, "weights"))

    @property
    def path(self) -> Path | None:
        """The file it names (None for a shipped name, a preset or a server)."""
        return Path(self.text) if self.kind in ("weights", "onnx", "engine") else None
