"""A tiny Euclid x DESI dataset written by the real Hugging Face ``datasets`` library.

Why not :mod:`.hf_fixture`: that one writes the files with pyarrow by hand, so it can only
test what we *think* ``datasets`` writes. Here the library itself encodes the features
(``Image()`` as PNG bytes, ``Array2D`` as an Arrow extension type, nullable structs) and
writes every layout a user may hold: ``save_to_disk`` (a ``DatasetDict`` or one split, in
shards), the reference layout ``<cache>/msiudek__..._{train,test}``, ``to_parquet`` with the
Hub's file names, the Hugging Face hub cache (``snapshots/<rev>`` links to ``blobs/``) and the
``datasets`` cache that ``load_dataset`` leaves (``parquet-train.arrow``).

Only tests import this module (``datasets`` is a dev dependency, never the importer's).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # load_dataset of local files must never try the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import datasets  # noqa: E402
from datasets import Array2D, Dataset, DatasetDict, Features, Image, Sequence, Value  # noqa: E402

from fmb_engine.survey.bands import wavelength_grid  # noqa: E402

BAND_COLUMNS = ("VIS_image", "NISP_Y_image", "NISP_J_image", "NISP_H_image")
REPO = "msiudek/astroPT_euclid_Q1_desi_dr1_dataset"
STAMP = 16  # native stamp size; the tests import with --image-size 16, so pixels are kept as they are
N_ROWS = 12

#: Row index -> what is wrong with it (the same rows in every split).
BAD_ROWS = {
    1: "NISP_J_image None",
    2: "negative object_id",
    3: "spectrum None",
    4: "spectrum.wavelength None",
    5: "object_id None (targetid kept)",
    6: "object_id and targetid None",
    7: "spectrum.error zero at pixels 100-109",
    8: "object_id duplicate of row 0",
    9: "spectrum.flux None",
    10: "RGB_image None",
}


def features(bands: str) -> Features:
    """The dataset's features; ``bands`` is ``"sequence"`` (nested lists) or ``"array2d"``."""
    band = Array2D((STAMP, STAMP), "float32") if bands == "array2d" else Sequence(Sequence(Value("float32")))
    spectrum = (  # the two ways to declare a struct of float lists; both are a struct of lists in Arrow
        {k: Sequence(Value("float32")) for k in ("flux", "wavelength", "error")} if bands == "sequence"
        else Sequence({k: Value("float32") for k in ("flux", "wavelength", "error")})
    )
    return Features({
        "object_id": Value("int64"), "targetid": Value("int64"), "redshift": Value("float32"),
        "RGB_image": Image(), **{c: band for c in BAND_COLUMNS}, "spectrum": spectrum,
    })


@dataclass
class Source:
    """What was written, row by row, to compare the store against."""

    object_id: list[int | None]
    targetid: list[int | None]
    redshift: list[float]
    rgb: list[np.ndarray | None]
    bands: dict[str, list[np.ndarray | None]]
    spectrum: list[dict | None]

    def columns(self) -> dict:
        return {"object_id": self.object_id, "targetid": self.targetid, "redshift": self.redshift,
                "RGB_image": self.rgb, **self.bands, "spectrum": self.spectrum}


def make_split(split: str, seed: int) -> Source:
    """``N_ROWS`` objects with the :data:`BAD_ROWS` problems; ids differ between splits."""
    rng = np.random.default_rng(seed)
    wave = wavelength_grid().astype(np.float32)
    base = 2_700_000_000_000_000_000 + (0 if split == "train" else 10_000)
    oids: list[int | None] = [base + i for i in range(N_ROWS)]
    tids: list[int | None] = [39_627_000_000_000_000 + (0 if split == "train" else 10_000) + i for i in range(N_ROWS)]
    rgb: list[np.ndarray | None] = [rng.integers(0, 256, (STAMP, STAMP, 3), dtype=np.uint8) for _ in range(N_ROWS)]
    bands: dict[str, list[np.ndarray | None]] = {
        c: [rng.standard_normal((STAMP, STAMP)).astype(np.float32) for _ in range(N_ROWS)] for c in BAND_COLUMNS}
    spectra: list[dict | None] = []
    for _ in range(N_ROWS):
        spectra.append({"flux": (1 + 0.1 * rng.standard_normal(wave.size)).astype(np.float32),
                        "wavelength": wave, "error": rng.uniform(0.05, 0.2, wave.size).astype(np.float32)})
    bands["NISP_J_image"][1] = None
    oids[2] = -oids[2]
    spectra[3] = None
    spectra[4]["wavelength"] = None
    oids[5] = None
    oids[6] = tids[6] = None
    spectra[7]["error"][100:110] = 0.0
    oids[8] = oids[0]
    spectra[9]["flux"] = None
    rgb[10] = None
    return Source(oids, tids, rng.uniform(0.1, 1.0, N_ROWS).astype(np.float32).tolist(), rgb, bands, spectra)


def make_dataset_dict(bands: str) -> tuple[DatasetDict, dict[str, Source]]:
    sources = {"train": make_split("train", 0), "test": make_split("test", 1)}
    dd = DatasetDict({
        split: Dataset.from_dict(src.columns(), features=features(bands), split=datasets.NamedSplit(split))
        for split, src in sources.items()})
    return dd, sources


def write_layout(layout: str, root: Path, dd: DatasetDict) -> Path:
    """Write ``dd`` in one layout under ``root``; returns the SOURCE to give ``fmb-engine data import``."""
    if layout == "save_to_disk-DatasetDict":
        dd.save_to_disk(str(root / "dd"), num_shards={"train": 2, "test": 1})
        return root / "dd"
    if layout == "save_to_disk-Dataset":  # one split, its name only in state.json (folder "copy")
        dd["test"].save_to_disk(str(root / "copy"))
        return root / "copy"
    if layout == "reference":
        for split, ds in dd.items():
            ds.save_to_disk(str(root / "cache" / f"{REPO.replace('/', '__')}__{split}"))
        return root / "cache"
    if layout == "to_parquet-hub-names":
        for split, ds in dd.items():
            ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
        return root
    if layout == "hub-cache":
        return _hub_cache(root, dd)
    if layout == "datasets-cache":
        parquet = {split: str(root / f"{split}.parquet") for split in dd}
        for split, ds in dd.items():
            ds.to_parquet(parquet[split])
        loaded = datasets.load_dataset("parquet", data_files=parquet, cache_dir=str(root / "hf_cache"))
        folders = {Path(f["filename"]).parent for ds in loaded.values() for f in ds.cache_files}
        assert len(folders) == 1, folders
        return folders.pop()
    raise ValueError(layout)


def _hub_cache(root: Path, dd: DatasetDict) -> Path:
    """``huggingface_hub``'s cache: ``snapshots/<rev>/data/<split>-...parquet`` are links to ``blobs/<hash>``;
    an older revision is left next to the current one (``refs/main``)."""
    repo = root / "hub" / f"datasets--{REPO.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee")
    for rev, rows in (("c0ffee", N_ROWS), ("0ld0ld", 3)):
        for split, ds in dd.items():
            tmp = root / "blob.tmp"
            ds.select(range(rows)).to_parquet(str(tmp))
            blob = repo / "blobs" / hashlib.sha256(tmp.read_bytes()).hexdigest()
            tmp.rename(blob)
            link = repo / "snapshots" / rev / "data" / f"{split}-00000-of-00001.parquet"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    return repo


LAYOUTS = ("save_to_disk-DatasetDict", "save_to_disk-Dataset", "reference", "to_parquet-hub-names", "hub-cache",
           "datasets-cache")


def write_parquet_with_image_paths(root: Path) -> tuple[Path, Source, list[Path]]:
    """The train split with ``RGB_image`` given as PNG files: ``to_parquet`` keeps only their
    paths (it does not embed the bytes), so the parquet needs the PNGs where they were."""
    src = make_split("train", 0)
    pngs = []
    for i, img in enumerate(src.rgb):
        if img is not None:
            pngs.append(root / f"rgb_{i}.png")
            PILImage.fromarray(img).save(pngs[-1])
    columns = src.columns() | {"RGB_image": [str(root / f"rgb_{i}.png") if img is not None else None
                                             for i, img in enumerate(src.rgb)]}
    Dataset.from_dict(columns, features=features("sequence")).to_parquet(str(root / "train-00000-of-00001.parquet"))
    return root / "train-00000-of-00001.parquet", src, pngs
