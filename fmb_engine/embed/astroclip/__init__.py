"""AstroCLIP, re-implemented in plain torch (after PolymathicAI/AstroCLIP, MIT licence).

Modules: :mod:`.vit` (DINOv2-style image backbone), :mod:`.specformer` (spectrum
backbone), :mod:`.heads` (cross-attention pooling, MLP), :mod:`.model` (both towers and
strict loading), :mod:`.checkpoint` (weights_only reading, Lightning conversion) and
:mod:`.embedder` (the FMB embedder).
"""

from fmb_engine.embed.astroclip.checkpoint import convert_lightning_checkpoint, read_checkpoint, save_checkpoint
from fmb_engine.embed.astroclip.embedder import AstroCLIPEmbedder
from fmb_engine.embed.astroclip.model import AstroCLIP, AstroCLIPArchitecture, load_state_strict

__all__ = [
    "AstroCLIP",
    "AstroCLIPArchitecture",
    "AstroCLIPEmbedder",
    "convert_lightning_checkpoint",
    "load_state_strict",
    "read_checkpoint",
    "save_checkpoint",
]
