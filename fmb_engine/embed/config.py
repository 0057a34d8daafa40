"""Every embedder's config schema (section ``embed.<name>``), pydantic only (no torch).

The config registry, ``config show|check`` and ``models list`` read an embedder's settings
here, and where its weight files are (the resolvers are the settings' own methods, so
finding weights never loads a model); which embedders exist is
:data:`fmb_engine.embed.catalog.EMBEDDERS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fmb_engine.embed.catalog import EMBEDDERS
from fmb_engine.embed.weights import resolve_dir, resolve_file
from fmb_engine.errors import ConfigError


class EmbedderConfig(BaseModel):
    """Settings every embedder understands; embedders extend this."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    batch_size: int = Field(64, ge=1, description="Objects per forward pass.")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
    amp: bool = Field(False, description="Mixed precision on CUDA (ignored on CPU).")
    weights: str | None = Field(
        None, description="Local weights directory or Hugging Face cache holding the checkpoint."
    )
    seed: int = Field(42, ge=0, description="Seed for anything random inside the embedder.")


class BaselineConfig(EmbedderConfig):
    """Feature settings shared by the pca and cca embedders."""

    batch_size: int = Field(512, ge=1, description="Objects per batch (features are computed batch by batch).")
    image_grid: int = Field(16, ge=1, le=256, description="Band images are average-pooled to this many pixels per side.")
    radial_bins: int = Field(8, ge=1, le=64, description="Annuli of the per-band radial profile (geometric edges).")
    spectrum_rebin: int = Field(10, ge=1, description="Spectral pixels per fine bin (inverse-variance weighted mean).")
    spectrum_coarse: int = Field(40, ge=1, description="Coarse continuum bins over the whole spectrum.")
    fit_max_objects: int = Field(
        20000, ge=10, description="At most this many train objects are used for the fit (a seeded random subset)."
    )


class PCAConfig(BaselineConfig):
    """Settings of the PCA baseline embedder."""

    image_components: int = Field(64, ge=1, description="Principal components kept for the image vector.")
    spectrum_components: int = Field(64, ge=1, description="Principal components kept for the spectrum vector.")


class CCAConfig(BaselineConfig):
    """Settings of the CCA baseline embedder."""

    pca_components: int = Field(32, ge=1, description="PCA components per modality before the CCA.")
    n_components: int = Field(16, ge=1, description="Canonical pairs kept (vector dimension).")
    weighting: Literal["rho", "sqrt", "none"] = Field(
        "rho", description="Weight of canonical pair j: its correlation rho_j, sqrt(rho_j), or 1."
    )
    ridge: float = Field(1e-3, ge=0.0, description="Whitening ridge, relative to the mean PCA variance.")


#: Image-side settings implied by each layout.
ASTROPT_LAYOUTS: dict[str, dict[str, Any]] = {
    "upstream": {"image_size": 256, "patch_order": "channel_last", "patch_norm": "zscore", "spiral": True},
    "fmb": {"image_size": 224, "patch_order": "channel_first", "patch_norm": "none", "spiral": False},
}


class AstroPTConfig(EmbedderConfig):
    """Settings of the AstroPT embedder."""

    repo_id: str = Field("Smith42/astroPT_v2.0", description="Hugging Face repo id, used only to find the local cache.")
    subfolder: str = Field("astropt/095M", description="Folder of the checkpoint inside the repo.")
    checkpoint: str = Field("ckpt.pt", description="Checkpoint file name.")
    loader: Literal["safe", "upstream"] = Field(
        "safe",
        description="safe: weights_only=True, registry rebuilt from plain fields; "
        "upstream: astropt.model_utils.load_astropt (unpickles; trusted upstream files only).",
    )
    layout: Literal["upstream", "fmb"] = Field(
        "upstream", description="Image patch layout preset: upstream AstroPT v2, or FMB's retrained model."
    )
    image_size: int | None = Field(None, ge=8, description="Image side in pixels after resize (layout default).")
    patch_order: Literal["channel_last", "channel_first"] | None = Field(
        None, description="Flattening inside a patch: (p1 p2 c) or (c p1 p2) (layout default)."
    )
    patch_norm: Literal["zscore", "none"] | None = Field(None, description="Per-patch z-score (layout default).")
    spiral: bool | None = Field(None, description="Spiral patch order, centre first (layout default).")
    image_source: Literal["auto", "rgb", "bands"] = Field(
        "auto", description="RGB from the stored composite (rgb), from the 4 bands (bands), or rgb when present (auto)."
    )
    spectrum_length: int = Field(7781, ge=1, description="Spectra are padded/trimmed to this many bins.")
    spectrum_norm: Literal["std", "zscore", "none"] = Field(
        "std", description="Per-spectrum scaling before patching (FMB: divide by std)."
    )
    reduction: Literal["mean", "exp_decay", "last"] = Field(
        "mean", description="Token reduction of generate_embeddings (middle layer)."
    )
    image_patch_size: int = Field(
        16, ge=1, description="Image patch size, used only when the checkpoint has no registry."
    )
    spectrum_patch_size: int = Field(
        10, ge=1, description="Spectrum patch size, used only when the checkpoint has no registry."
    )

    def resolved(self, key: str) -> Any:
        """A layout-controlled image setting: the explicit value, else the layout's."""
        value = getattr(self, key)
        return ASTROPT_LAYOUTS[self.layout][key] if value is None else value

    def checkpoint_path(self) -> Path:
        """The checkpoint file these settings name (ConfigError listing every place searched)."""
        return resolve_file(
            self.checkpoint, weights=self.weights, repo_id=self.repo_id, subfolder=self.subfolder, what="AstroPT"
        )


#: Files of the model snapshot, relative to its root.
SNAPSHOT_FILES: tuple[str, ...] = (
    "config.json",
    "model.safetensors",
    "codecs/image/config.json",
    "codecs/image/model.safetensors",
    "codecs/spectrum/config.json",
    "codecs/spectrum/model.safetensors",
)


class AIONConfig(EmbedderConfig):
    """Settings of the AION embedder."""

    repo_id: str = Field(
        "polymathic-ai/aion-base", description="Hugging Face repo id, used only to find the local cache."
    )
    adapter: str | None = Field(
        None,
        description="FMB's Euclid->HSC adapter checkpoint: a file, or a directory holding adapter_file. "
        "Unset: looked for next to the AION weights.",
    )
    adapter_file: str = Field("adapters_final.pt", description="Adapter checkpoint file name.")
    image_size: int = Field(96, ge=16, description="Euclid bands are resized (bilinear) to this size.")
    max_abs: float = Field(100.0, gt=0, description="Clamp of the scaled Euclid flux, before the adapter.")

    def snapshot_dir(self) -> Path:
        """The AION model snapshot (``weights``, else the Hugging Face cache of ``repo_id``)."""
        return resolve_dir(SNAPSHOT_FILES, weights=self.weights, repo_id=self.repo_id, what="AION")

    def adapter_path(self, snapshot: Path | None = None) -> Path:
        """The adapter checkpoint: ``adapter`` (file or directory), else next to the AION weights."""
        if self.adapter is not None:
            return resolve_file(
                self.adapter_file, weights=self.adapter, repo_id=None, what="AION adapter", config_key="adapter"
            )
        places = [p for p in (snapshot, Path(self.weights).expanduser() if self.weights else None) if p is not None]
        for place in places:
            if (place / self.adapter_file).is_file():
                return place / self.adapter_file
        looked = "".join(f"\n  - {p}" for p in places) or " nowhere ('weights' is unset)"
        raise ConfigError(
            f"AION needs FMB's Euclid->HSC adapter checkpoint '{self.adapter_file}' (AION has no Euclid modality). "
            f"Looked in:{looked}\nSet 'adapter' to the file or to the directory holding it."
        )


class AstroCLIPConfig(EmbedderConfig):
    """Settings of the AstroCLIP embedder."""

    repo_id: str = Field(
        "polymathic-ai/astroclip", description="Hugging Face repo id, used only to find the local cache."
    )
    subfolder: str = Field("", description="Folder of the checkpoint inside the repo.")
    checkpoint: str = Field(
        "astroclip.ckpt",
        description="Checkpoint file name; the published Lightning file must be converted once "
        "(python -m fmb_engine.embed.astroclip.checkpoint SRC DST).",
    )
    image_size: int = Field(144, ge=8, description="Image side after resize; must match the model (144).")
    image_source: Literal["auto", "rgb", "bands"] = Field(
        "auto", description="RGB from the stored composite (rgb), from the 4 bands (bands), or rgb when present (auto)."
    )
    swap_hw: bool = Field(False, description="Transpose images (H <-> W) as upstream's training loader did.")
    spectrum_length: int = Field(7781, ge=40, description="Spectra are padded/trimmed to this many bins.")
    spectrum_norm: Literal["none", "zscore"] = Field(
        "none", description="Scaling before SpecFormer (which standardises again): none = raw flux."
    )

    def checkpoint_path(self) -> Path:
        """The checkpoint file these settings name (ConfigError listing every place searched)."""
        return resolve_file(
            self.checkpoint, weights=self.weights, repo_id=self.repo_id, subfolder=self.subfolder, what="AstroCLIP"
        )


#: The ``embed`` family of config sections: ``embed.<name>`` -> schema (read by fmb_engine.config.SECTIONS).
SCHEMAS: dict[str, type[EmbedderConfig]] = {name: globals()[info.config] for name, info in EMBEDDERS.items()}
