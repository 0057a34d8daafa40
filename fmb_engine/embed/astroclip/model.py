"""The AstroCLIP two-tower model, its architecture settings and strict checkpoint loading.

Written for FMB in plain torch after PolymathicAI/AstroCLIP (MIT licence; Parker et
al. 2024). Module names follow upstream so the published ``astroclip.ckpt`` state
dict loads with ``strict=True``:

* ``image_encoder.backbone.*`` (DINOv2 ViT; DINOv2's chunked names
  ``blocks.<chunk>.<i>.`` are renamed to ``blocks.<i>.``), ``image_encoder.cross_attention.*``,
  ``image_encoder.mlp.*``;
* ``spectrum_encoder.backbone.*`` (SpecFormer), ``spectrum_encoder.cross_attention.*``,
  ``spectrum_encoder.mlp.*``.

The image head applies its MLP **without** a residual, the spectrum head **with** one,
as upstream does.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from fmb_engine.embed.astroclip.heads import MLP, CrossAttentionHead
from fmb_engine.embed.astroclip.specformer import SpecFormer
from fmb_engine.embed.astroclip.vit import VisionTransformer
from fmb_engine.errors import ConfigError

#: State-dict entries that are not weights of either tower and are ignored on load.
IGNORED_KEYS: frozenset[str] = frozenset({"logit_scale"})
_CHUNKED_BLOCK = re.compile(r"^(backbone\.blocks)\.\d+\.(\d+)\.")


@dataclass(frozen=True)
class AstroCLIPArchitecture:
    """Sizes of the published AstroCLIP model (the defaults); smaller values build test models."""

    image_size: int = 144
    patch_size: int = 12
    vit_dim: int = 1024
    vit_depth: int = 24
    vit_heads: int = 16
    vit_mlp_ratio: float = 4.0
    vit_registers: int = 0
    spec_input_dim: int = 22
    spec_dim: int = 768
    spec_layers: int = 6
    spec_heads: int = 6
    spec_max_len: int = 800
    spec_section: int = 20
    spec_overlap: int = 10
    embed_dim: int = 1024
    head_heads: int = 4
    dropout: float = 0.1

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> AstroCLIPArchitecture:
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown AstroCLIP architecture keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageEncoder(nn.Module):
    """AstroDINO backbone tokens -> cross-attention pooling -> MLP (no residual) -> (B, embed_dim)."""

    def __init__(self, arch: AstroCLIPArchitecture):
        super().__init__()
        self.backbone = VisionTransformer(
            img_size=arch.image_size,
            patch_size=arch.patch_size,
            embed_dim=arch.vit_dim,
            depth=arch.vit_depth,
            num_heads=arch.vit_heads,
            mlp_ratio=arch.vit_mlp_ratio,
            num_register_tokens=arch.vit_registers,
        )
        self.cross_attention = CrossAttentionHead(arch.embed_dim, arch.head_heads, arch.vit_dim, arch.dropout)
        self.mlp = MLP(arch.embed_dim, 4 * arch.embed_dim, arch.dropout)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.cross_attention(self.backbone(images))
        return self.mlp(x).squeeze(1)


class SpectrumEncoder(nn.Module):
    """SpecFormer embedding -> cross-attention pooling -> x + MLP(x) -> (B, embed_dim)."""

    def __init__(self, arch: AstroCLIPArchitecture):
        super().__init__()
        self.backbone = SpecFormer(
            input_dim=arch.spec_input_dim,
            embed_dim=arch.spec_dim,
            num_layers=arch.spec_layers,
            num_heads=arch.spec_heads,
            max_len=arch.spec_max_len,
            slice_section_length=arch.spec_section,
            slice_overlap=arch.spec_overlap,
        )
        self.cross_attention = CrossAttentionHead(arch.embed_dim, arch.head_heads, arch.spec_dim, arch.dropout)
        self.mlp = MLP(arch.embed_dim, 4 * arch.embed_dim, arch.dropout)

    def forward(self, spectra: torch.Tensor) -> torch.Tensor:
        x = self.cross_attention(self.backbone(spectra)["embedding"])
        return (x + self.mlp(x)).squeeze(1)


class AstroCLIP(nn.Module):
    """Both towers; ``forward(x, "image" | "spectrum")`` as upstream (unnormalised outputs)."""

    def __init__(self, arch: AstroCLIPArchitecture | None = None):
        super().__init__()
        self.arch = arch or AstroCLIPArchitecture()
        self.image_encoder = ImageEncoder(self.arch)
        self.spectrum_encoder = SpectrumEncoder(self.arch)

    def forward(self, x: torch.Tensor, input_type: str) -> torch.Tensor:
        if input_type == "image":
            return self.image_encoder(x)
        if input_type == "spectrum":
            return self.spectrum_encoder(x)
        raise ValueError("input_type must be 'image' or 'spectrum'")


def split_state_dict(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Split a full AstroCLIP state dict into (image, spectrum, other keys).

    Strips the ``image_encoder.``/``spectrum_encoder.`` prefixes (and a Lightning
    ``model.`` or a compile ``_orig_mod.`` prefix), and renames DINOv2's chunked block
    keys ``backbone.blocks.<chunk>.<i>.`` to ``backbone.blocks.<i>.``.
    """
    image: dict[str, Any] = {}
    spectrum: dict[str, Any] = {}
    other: list[str] = []
    for key, value in state.items():
        k = key
        for prefix in ("_orig_mod.", "model."):
            if k.startswith(prefix) and (k[len(prefix) :].startswith(("image_encoder.", "spectrum_encoder."))):
                k = k[len(prefix) :]
        if k.startswith("image_encoder."):
            image[_CHUNKED_BLOCK.sub(r"\1.\2.", k[len("image_encoder.") :])] = value
        elif k.startswith("spectrum_encoder."):
            spectrum[k[len("spectrum_encoder.") :]] = value
        else:
            other.append(key)
    return image, spectrum, other


def load_state_strict(model: AstroCLIP, state: dict[str, Any], source: str = "checkpoint") -> None:
    """Load a full AstroCLIP state dict strictly; ConfigError lists every mismatch."""
    image, spectrum, other = split_state_dict(state)
    problems: list[str] = []
    unexpected_other = [k for k in other if k not in IGNORED_KEYS]
    if unexpected_other:
        problems.append(f"unexpected keys outside both encoders: {unexpected_other[:20]}")
    for prefix, module, part in (
        ("image_encoder.", model.image_encoder, image),
        ("spectrum_encoder.", model.spectrum_encoder, spectrum),
    ):
        expected = module.state_dict()
        missing = sorted(set(expected) - set(part))
        unexpected = sorted(set(part) - set(expected))
        shapes = [
            f"{prefix}{k}: checkpoint {tuple(part[k].shape)} vs model {tuple(expected[k].shape)}"
            for k in sorted(set(part) & set(expected))
            if tuple(part[k].shape) != tuple(expected[k].shape)
        ]
        if missing:
            problems.append(f"missing keys: {[prefix + k for k in missing][:20]}{' ...' if len(missing) > 20 else ''}")
        if unexpected:
            problems.append(
                f"unexpected keys: {[prefix + k for k in unexpected][:20]}{' ...' if len(unexpected) > 20 else ''}"
            )
        if shapes:
            problems.append(f"shape mismatches: {shapes[:10]}")
    if problems:
        raise ConfigError(f"{source} does not match the AstroCLIP model (strict loading): " + "; ".join(problems))
    model.image_encoder.load_state_dict(image, strict=True)
    model.spectrum_encoder.load_state_dict(spectrum, strict=True)
