"""A tiny AstroCLIP (random weights, upstream key layout) shared by the embedder and retrain tests."""

from __future__ import annotations

import torch

from fmb_engine.embed.astroclip import AstroCLIP, AstroCLIPArchitecture

TINY = AstroCLIPArchitecture(
    image_size=24,
    patch_size=12,
    vit_dim=32,
    vit_depth=4,
    vit_heads=2,
    spec_dim=24,
    spec_layers=2,
    spec_heads=2,
    embed_dim=16,
    head_heads=2,
)


def tiny_model(seed: int = 0) -> AstroCLIP:
    torch.manual_seed(seed)
    model = AstroCLIP(TINY).eval()
    with torch.no_grad():  # layer scales of 1e-5 would hide the blocks
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    return model


def published_keys(model: AstroCLIP, chunks: int = 2) -> dict[str, torch.Tensor]:
    """The state dict as the published Lightning file names it (DINOv2 chunked blocks)."""
    depth = len(model.image_encoder.backbone.blocks)
    per = depth // chunks
    out = {}
    for k, v in model.state_dict().items():
        parts = k.split(".")
        if k.startswith("image_encoder.backbone.blocks."):
            i = int(parts[3])
            k = ".".join(parts[:3] + [str(i // per), str(i)] + parts[4:])
        out[k] = v
    return out
