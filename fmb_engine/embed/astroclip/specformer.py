"""SpecFormer: AstroCLIP's spectrum backbone (a pre-norm transformer over overlapping flux windows).

Written for FMB in plain torch. Attribute names follow upstream so
``specformer.ckpt`` and the spectrum half of ``astroclip.ckpt`` load strictly:
``data_embed``, ``position_embed``,
``blocks.<i>.{layernorm1, attention.attention, attention.projection, layernorm2, mlp.encoder, mlp.decoder}``,
``final_layernorm`` and ``head`` (the masked-reconstruction head, unused for embeddings).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fmb_engine.embed.astroclip.heads import MLP


class SelfAttention(nn.Module):
    """Non-causal multi-head attention with a fused ``attention`` (qkv) and a ``projection``."""

    def __init__(self, dim: int, num_heads: int, bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.attention = nn.Linear(dim, 3 * dim, bias=bias)
        self.projection = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            z.reshape(b, t, self.num_heads, c // self.num_heads).transpose(1, 2)
            for z in self.attention(x).split(c, dim=2)
        )
        y = F.scaled_dot_product_attention(q, k, v)
        return self.projection(y.transpose(1, 2).reshape(b, t, c))


class TransformerBlock(nn.Module):
    """x + attention(layernorm1 x), then x + mlp(layernorm2 x)."""

    def __init__(self, dim: int, num_heads: int, mlp_expansion: int = 4):
        super().__init__()
        self.layernorm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attention = SelfAttention(dim, num_heads)
        self.layernorm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = MLP(dim, mlp_expansion * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm1(x))
        return x + self.mlp(self.layernorm2(x))


class SpecFormer(nn.Module):
    """Spectrum transformer; :meth:`forward` takes raw flux (B, L, 1) and returns
    ``{"embedding": (B, T, D), "reconstructions": (B, T, input_dim)}``."""

    def __init__(
        self,
        input_dim: int = 22,
        embed_dim: int = 768,
        num_layers: int = 6,
        num_heads: int = 6,
        max_len: int = 800,
        slice_section_length: int = 20,
        slice_overlap: int = 10,
    ):
        super().__init__()
        self.max_len = max_len
        self.section = slice_section_length
        self.overlap = slice_overlap
        self.data_embed = nn.Linear(input_dim, embed_dim)
        self.position_embed = nn.Embedding(max_len, embed_dim)
        self.blocks = nn.ModuleList([TransformerBlock(embed_dim, num_heads) for _ in range(num_layers)])
        self.final_layernorm = nn.LayerNorm(embed_dim, eps=1e-5)
        self.head = nn.Linear(embed_dim, input_dim)

    def n_tokens(self, length: int) -> int:
        """Tokens produced for a spectrum of ``length`` bins (windows + the statistics token)."""
        # one start is dropped (see preprocess) and one statistics token is added
        return len(range(0, length - self.overlap, self.section - self.overlap))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, 1) raw flux -> (B, T, section + 2) tokens.

        Each spectrum is standardised (std clipped at >= 0.2); windows of ``section``
        bins start every ``section - overlap`` bins, below ``L - overlap``, and the last
        of them is always dropped, as upstream does for one-channel input. Token 0 holds
        ((mean - 2) / 2, (std - 2) / 8); window tokens carry two leading zeros.
        """
        if x.ndim != 3 or x.shape[-1] != 1:
            raise ValueError(f"expected (B, L, 1) flux, got {tuple(x.shape)}")
        std = x.std(dim=1, keepdim=True).clamp(min=0.2)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) / std
        step = self.section - self.overlap
        starts = list(range(0, x.shape[1] - self.overlap, step))[:-1]
        if not starts:
            raise ValueError(f"spectrum of {x.shape[1]} bins is too short for windows of {self.section}")
        windows = torch.stack([x[:, s : s + self.section, 0] for s in starts], dim=1)  # (B, T-1, section)
        tokens = F.pad(windows, (2, 0, 1, 0))
        tokens[:, 0, 0] = (mean[:, 0, 0] - 2) / 2
        tokens[:, 0, 1] = (std[:, 0, 0] - 2) / 8
        return tokens

    def forward_tokens(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        t = x.shape[1]
        if t > self.max_len:
            raise ValueError(f"{t} spectrum tokens exceed SpecFormer's max_len {self.max_len}")
        pos = torch.arange(t, device=x.device)
        h = self.data_embed(x) + self.position_embed(pos)
        for blk in self.blocks:
            h = blk(h)
        h = self.final_layernorm(h)
        return {"embedding": h, "reconstructions": self.head(h)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_tokens(self.preprocess(x))
