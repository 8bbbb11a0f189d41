"""dmfnet-edge: DM-FNet multimodal medical image fusion, from training to edge deployment."""

__version__ = "0.1.0"
