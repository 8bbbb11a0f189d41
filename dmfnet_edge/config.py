"""Model configuration: frozen dataclasses, three presets and a JSON round trip.

Presets:
* ``paper``: the published sizes (UNet 20,670,081 and fusion network 3,026,640 parameters).
* ``edge``: the compact shipped default for CPUs and embedded consoles.
* ``tiny``: a few thousand parameters, for tests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from dmfnet_edge.errors import ModelFileError

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
        try:
            version = data.get("config_version", CONFIG_VERSION)
            if version != CONFIG_VERSION:
                raise ModelFileError(f"model config version {version} is not supported (expected {CONFIG_VERSION})")
            return cls(
                name=str(data["name"]),
                unet=_build(UNetConfig, data["unet"]),
                fusion=_build(FusionConfig, data["fusion"]),
                diffusion=_build(DiffusionConfig, data["diffusion"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"model config is malformed ({type(exc).__name__}: {exc}); "
                                 "regenerate it with the training or export command") from None

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"model config is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ModelFileError("model config must be a JSON object")
        return cls.from_dict(data)


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
        fusion=FusionConfig(head_channels=32, attention_reduction=4),
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
