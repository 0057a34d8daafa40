"""A tiny real AION-1 snapshot (upstream ``aion`` classes, random weights) for tests.

Shared by the AION embedder tests and the ``retrain aion-adapter`` tests. Callers must
``pytest.importorskip("aion")`` and ``pytest.importorskip("safetensors")`` first.
"""

from __future__ import annotations

from pathlib import Path

import torch

KEYS = ["tok_image_hsc", "tok_spectrum_desi"]
DIM = 32
#: Settings of the tiny image codec (2 compressions: a 32 px image gives 8 x 8 tokens).
IMAGE_CODEC = dict(
    quantizer_levels=[4, 4, 4],
    hidden_dims=16,
    multisurvey_projection_dims=8,
    n_compressions=2,
    num_consecutive=1,
    embedding_dim=3,
)


def build_tiny_aion(root: Path, adapter_hidden: int = 4, seed: int = 0) -> dict:
    """Save a tiny AION + image and spectrum codecs under ``root/snapshot`` (``save_pretrained``)
    and an ``adapters_final.pt`` under ``root/adapters``; return the paths and in-memory modules."""
    import aion
    from aion.codecs import ImageCodec, SpectrumCodec
    from aion.modalities import DESISpectrum, HSCImage

    from fmb_engine.embed.aion import euclid_to_hsc

    torch.manual_seed(seed)
    snap, adapters = Path(root) / "snapshot", Path(root) / "adapters"
    img_codec = ImageCodec(**IMAGE_CODEC).eval()
    spec_codec = SpectrumCodec(
        encoder_depths=(1, 1, 1, 1),
        encoder_dims=(8, 16, 32, 64),
        decoder_depths=(1, 1, 1, 1),
        decoder_dims=(32, 16, 8, 1),
        latent_channels=64,
        embedding_dim=10,
    ).eval()
    model = aion.AION(
        dict(
            domains_in=KEYS,
            domains_out=KEYS,
            dim=DIM,
            encoder_depth=2,
            decoder_depth=1,
            num_heads=2,
            mlp_ratio=2.0,
            qkv_bias=False,
            proj_bias=False,
            mlp_bias=False,
            norm_bias=False,
            act_layer="SiLU",
            gated_mlp=True,
            qk_norm=False,
            decoder_causal_mask=False,
            decoder_sep_mask=True,
            num_register_tokens=0,
            use_act_checkpoint=False,
            share_modality_embeddings=True,
        )
    ).eval()
    model.save_pretrained(snap)
    img_codec.save_pretrained(snap, modality=HSCImage)
    spec_codec.save_pretrained(snap, modality=DESISpectrum)
    adapter = euclid_to_hsc(adapter_hidden)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in adapter.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    adapter.eval()
    adapters.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"euclid_to_hsc": adapter.state_dict(), "hsc_to_euclid": {}, "args": {"hidden": adapter_hidden}},
        adapters / "adapters_final.pt",
    )
    return {
        "snap": snap,
        "adapters": adapters,
        "model": model,
        "img_codec": img_codec,
        "spec_codec": spec_codec,
        "adapter": adapter,
    }
