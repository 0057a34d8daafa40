"""One typed schema per config section.

Each section is a pydantic model with ``extra="forbid"``: unknown keys are an
error, every field has a default and a description (used by ``config show``, the
templates under ``configs/`` and the TUI's generated forms). The stage-less
sections live here; every stage keeps its schema in a light module of its own
(``<stage>/config.py``: pydantic and the standard library only), named in
:data:`fmb_engine.config.registry.SECTIONS` by its import path and imported only when
that section is used.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """Base of every config section: strict keys, validated assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GeneralConfig(Section):
    """Settings shared by every stage."""

    survey: str = Field(
        "mock",
        description="Survey to work on: a name under the workspace's survey/ folder, or a path to an .h5 file.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Torch device: auto picks CUDA when present, else CPU."
    )
    threads: int = Field(0, ge=0, description="Torch CPU threads; 0 keeps torch's default.")


class MockConfig(Section):
    """`fmb-engine data mock`: the embedded mock survey with injected anomalies."""

    name: str = Field("mock", min_length=1, description="Survey name: written to survey/<name>.h5.")
    objects: int = Field(2000, ge=20, le=10_000_000, description="Number of objects to simulate.")
    seed: int = Field(42, ge=0, description="Random seed; same seed and settings give the same file.")
    anomaly_fraction: float = Field(
        0.02, ge=0.0, le=0.5, description="Fraction of objects with an injected, labelled anomaly."
    )
    image_size: int = Field(64, ge=16, le=512, description="Cutout size in pixels (square, all four bands).")
    train_fraction: float = Field(0.8, gt=0.0, lt=1.0, description="Fraction of objects in the train split.")
    rgb: bool = Field(True, description="Also store an 8-bit RGB composite per object.")
    batch_size: int = Field(512, ge=1, description="Objects simulated and written per chunk (bounds memory).")
    compression: Literal["lzf", "gzip", "none"] = Field(
        "lzf", description="HDF5 compression: lzf is fast; gzip is smaller and slower."
    )
    workers: int = Field(
        0, ge=-1, le=64,
        description="Render processes running ahead of the writer: 0 = auto (1 on multi-core machines), -1 = none.",
    )


class ImportConfig(Section):
    """`fmb-engine data import`: the published Euclid Q1 x DESI DR1 dataset."""

    name: str = Field("euclid_desi", min_length=1, description="Survey name: written to survey/<name>.h5.")
    catalog: str | None = Field(
        None, description="Optional FITS catalogue joined on TARGETID for Z, LOGM, LOGSFR."
    )
    splits: list[str] = Field(
        default_factory=lambda: ["train", "test"],
        description="Splits to import when the source has several (others are ignored); for a source with one split, "
        "its name. NAME=PATH assigns a file or folder to split NAME.",
    )
    image_size: int = Field(
        64, ge=16, le=512, description="Band images are resampled to this size (bilinear) when they differ."
    )
    missing: Literal["keep", "drop"] = Field(
        "keep",
        description="Rows with a missing band or spectrum: keep them flagged (has_bands/has_spectrum) or drop them. "
        "Either way they are counted per reason in the manifest.",
    )
    batch_size: int = Field(256, ge=1, description="Rows converted and written per chunk (bounds memory).")
    compression: Literal["lzf", "gzip", "none"] = Field("lzf", description="HDF5 compression.")
    limit: int | None = Field(None, ge=1, description="Import at most this many rows (for a quick look).")
    resample: bool = Field(
        False, description="Resample band images that are not square to image_size (else such rows are dropped)."
    )
    skip_bad_files: bool = Field(
        False, description="Import the readable files and record unreadable ones in the manifest (else stop)."
    )
