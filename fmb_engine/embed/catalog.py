"""Which embedders exist and what they produce, without importing torch, a model package or pydantic.

The CLI's per-embedder commands, ``models list``, the TUI's stage list and the config
registry name embedders from :data:`EMBEDDERS`; :func:`fmb_engine.embed.base.get` imports an
implementation on first use, and the class takes its descriptive attributes from its entry.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Rows per shard file of an embedding run (the unit of resumption; ``embed --shard-size``).
DEFAULT_SHARD_SIZE = 4096
#: Canonical modality names, everywhere (config, columns, store datasets, docs).
MODALITIES: tuple[str, ...] = ("image", "spectrum", "joint")


@dataclass(frozen=True)
class EmbedderInfo:
    """What the front doors know of an embedder before its implementation is imported."""

    summary: str  # one line: the help of ``fmb-engine embed <name>``
    config: str  # its schema's class name in fmb_engine.embed.config
    implementation: str  # "module:Class", imported on first use
    aligned: bool  # image and spectrum vectors live in one space (a cosine between them means something)
    needs_fit: bool = False  # fitted on the train split before embedding
    modalities: tuple[str, ...] = MODALITIES


#: Embedder name -> its entry, by name (the order of ``models list`` and ``config show``).
EMBEDDERS: dict[str, EmbedderInfo] = {
    "aion": EmbedderInfo("AION-1 mean-pooled encoder embeddings; see the module docstring.", "AIONConfig",
                         "fmb_engine.embed.aion:AIONEmbedder", aligned=False),
    "astroclip": EmbedderInfo("AstroCLIP image/spectrum embeddings in one space; see the module docstring.",
                              "AstroCLIPConfig", "fmb_engine.embed.astroclip.embedder:AstroCLIPEmbedder", aligned=True),
    "astropt": EmbedderInfo("AstroPT middle-layer mean embeddings; see the module docstring.", "AstroPTConfig",
                            "fmb_engine.embed.astropt:AstroPTEmbedder", aligned=False),
    "cca": EmbedderInfo("Canonical correlation of the PCA-whitened image and spectrum features (see the module "
                        "docstring).", "CCAConfig", "fmb_engine.embed.baselines:CCAEmbedder", aligned=True,
                        needs_fit=True),
    "pca": EmbedderInfo("Per-modality PCA of the baseline features; joint = concatenation (see the module docstring).",
                        "PCAConfig", "fmb_engine.embed.baselines:PCAEmbedder", aligned=False, needs_fit=True),
}
