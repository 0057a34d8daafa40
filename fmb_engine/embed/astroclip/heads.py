"""AstroCLIP's projection heads: a learned-query cross-attention pooling and an MLP.

Written for FMB in plain torch with upstream attribute names
(``query``, ``multihead_attn``, ``layernorm``; ``mlp.encoder``/``mlp.decoder``).
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """encoder -> GELU -> decoder (-> dropout). No residual here; callers add it when needed."""

    def __init__(self, in_features: int, hidden_features: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.encoder = nn.Linear(in_features, hidden_features, bias=bias)
        self.activation = nn.GELU()
        self.decoder = nn.Linear(hidden_features, in_features, bias=bias)
        self.dropout_layer = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout_layer(self.decoder(self.activation(self.encoder(x))))


class CrossAttentionHead(nn.Module):
    """One learned query attends over the backbone tokens: (B, T, kdim) -> (B, 1, embed_dim).

    ``nn.MultiheadAttention`` stores a fused ``in_proj_weight`` when kdim == embed_dim and
    separate ``q/k/v_proj_weight`` otherwise, exactly like the published checkpoint.
    """

    def __init__(self, embed_dim: int, n_head: int, model_embed_dim: int, dropout: float = 0.1):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.multihead_attn = nn.MultiheadAttention(
            embed_dim=embed_dim, num_heads=n_head, batch_first=True, kdim=model_embed_dim, vdim=model_embed_dim
        )
        self.layernorm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query.expand(x.shape[0], -1, -1)
        out, _ = self.multihead_attn(q, x, x, need_weights=False)
        return self.layernorm(self.dropout(out))
