"""Figure export for the Figures screen (no UI imports; meant to move into ``fmb_engine.figures``).

* ``quicklook``: one PNG per object through the engine's ``render_quicklook`` (bands, RGB,
  spectrum with lines).
* ``grid``: one page with, per object, its colour composite and its smoothed spectrum with
  the emission lines at its redshift, titled with the id, rank and triage label. PNG (one
  file per page) or PDF (one file, one page per 24 objects).

Object sets: the top-k of a ranking, or every object with a given triage label.
Matplotlib is used through its object API (``Figure`` + Agg canvas, no pyplot state), so
rendering in a worker thread is safe.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmb_engine.errors import FMBError
from fmb_engine.survey.bands import EMISSION_LINES
from fmb_engine.workspace import Workspace, atomic_path

PER_PAGE = 24
KINDS = ("grid", "quicklook")
FORMATS = ("png", "pdf")


@dataclass(frozen=True)
class ObjectSet:
    kind: str  # "top" | "label"
    system: str | None = None
    k: int = 12
    label: str | None = None

    def describe(self) -> str:
        if self.kind == "top":
            return f"top-{self.k} of {self.system}"
        return f"label {self.label}"

    def slug(self) -> str:
        text = f"top{self.k}-{self.system}" if self.kind == "top" else f"label-{self.label}"
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def resolve_objects(ws: Workspace, objects: ObjectSet, labels: dict[str, str] | None = None) -> list[tuple[str, int | None]]:
    """(object_id, rank in the set's system) in display order."""
    from fmb_engine import rankings

    if objects.kind == "top":
        if objects.k < 1:
            raise FMBError("k must be at least 1")
        system = rankings.default_system(rankings.list_systems(ws), objects.system)
        table = rankings.load_table(ws, [system])
        rank = table.column(f"rank:{system}").to_numpy()
        order = np.argsort(rank, kind="stable")[: objects.k]
        ids = table.column("object_id").take(order).to_pylist()
        return [(oid, int(rank[i])) for oid, i in zip(ids, order, strict=True)]
    if objects.kind == "label":
        if labels is None:
            from fmb_engine.triage.labels import open_labels

            with open_labels(ws) as store:
                labels = store.labels()
        chosen = sorted(oid for oid, lbl in labels.items() if lbl == objects.label)
        if not chosen:
            raise FMBError(f"no object is labelled {objects.label!r} yet")
        ranks: dict[str, int] = {}
        if objects.system:
            try:
                table = rankings.load_table(ws, [objects.system])
                ids = np.asarray(table.column("object_id").to_pylist())
                rank = table.column(f"rank:{objects.system}").to_numpy()
                keep = np.isin(ids, chosen)
                ranks = dict(zip(ids[keep].tolist(), rank[keep].tolist(), strict=True))
            except FMBError:
                ranks = {}
        chosen.sort(key=lambda o: (ranks.get(o, 1 << 62), o))
        return [(oid, ranks.get(oid)) for oid in chosen]
    raise FMBError(f"unknown object set {objects.kind!r}")


def _smooth(flux: np.ndarray, good: np.ndarray, width: int = 7) -> np.ndarray:
    kernel = np.ones(width)
    num = np.convolve(np.where(good, flux, 0.0), kernel, mode="same")
    den = np.convolve(good.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _grid_page(objs, ranks, labels, title: str):
    from matplotlib.figure import Figure

    from fmb_engine.survey.composite import asinh_rgb

    n = len(objs)
    fig = Figure(figsize=(11, 1.55 * n + 0.6), layout="constrained")
    grid = fig.add_gridspec(n, 2, width_ratios=[1, 5])
    for i, obj in enumerate(objs):
        ax_img = fig.add_subplot(grid[i, 0])
        ax_img.imshow(obj.rgb if obj.rgb is not None else asinh_rgb(obj.images), origin="lower")
        ax_img.set_axis_off()
        ax = fig.add_subplot(grid[i, 1])
        good = (~obj.mask) & (obj.ivar > 0)
        flux = _smooth(np.nan_to_num(obj.flux.astype(float)), good)
        ax.plot(obj.wavelength, flux, lw=0.5, color="k")
        z = float(obj.meta.get("redshift", np.nan))
        if np.isfinite(z):
            for lam in EMISSION_LINES.values():
                obs = lam * (1 + z)
                if obj.wavelength[0] < obs < obj.wavelength[-1]:
                    ax.axvline(obs, color="tab:blue", ls=":", lw=0.6)
        finite = flux[np.isfinite(flux)]
        if finite.size:
            lo, hi = np.percentile(finite, [0.5, 99.8])
            ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        if i < n - 1:
            ax.set_xticklabels([])
        bits = [obj.object_id, f"z={z:.3f}"]
        if ranks.get(obj.object_id) is not None:
            bits.append(f"rank {ranks[obj.object_id]:,}")
        if labels.get(obj.object_id):
            bits.append(f"[{labels[obj.object_id]}]")
        ax.set_title("   ".join(bits), fontsize=8, loc="left")
    fig.axes[-1].set_xlabel("observed wavelength [Å]", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def export(ws: Workspace, kind: str, objects: ObjectSet, fmt: str = "png", labels: dict[str, str] | None = None,
           out_dir: Path | None = None, survey: Path | None = None) -> list[Path]:
    """Render ``kind`` for ``objects``; returns the written files (under ``figures/tui/``)."""
    from fmb_engine.survey.store import SurveyReader

    if kind not in KINDS:
        raise FMBError(f"unknown figure {kind!r}; figures: {', '.join(KINDS)}")
    if fmt not in FORMATS:
        raise FMBError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if kind == "quicklook" and fmt != "png":
        raise FMBError("the quick-look figure is PNG only; choose png, or the grid figure for PDF")
    chosen = resolve_objects(ws, objects, labels)
    if labels is None:
        labels = {}
    ranks = {oid: r for oid, r in chosen}
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out_dir = out_dir or ws.folder("figures") / "tui"
    out_dir.mkdir(parents=True, exist_ok=True)
    if survey is None:
        from fmb_engine.config import load

        survey = ws.survey_path(load("general", ws).values.survey)  # type: ignore[attr-defined]
    if not survey.is_file():
        found = ws.surveys()
        if not found:
            raise FMBError(f"no survey in {ws.folder('survey')}: nothing to draw")
        survey = found[0]
    written: list[Path] = []
    with SurveyReader(survey) as reader:
        objs = []
        for oid, _ in chosen:
            try:
                objs.append(reader.get(oid))
            except FMBError:
                continue
        if not objs:
            raise FMBError(f"none of the {len(chosen)} objects of {objects.describe()} is in {survey.name}")
        if kind == "quicklook":
            from fmb_engine.survey.quicklook import render_quicklook

            folder = out_dir / f"{stamp}-quicklook-{objects.slug()}"
            for obj in objs:
                written.append(render_quicklook(obj, folder / f"{obj.object_id}.png"))
            return written
        pages = [objs[i:i + PER_PAGE] for i in range(0, len(objs), PER_PAGE)]
        base = out_dir / f"{stamp}-grid-{objects.slug()}"
        if fmt == "pdf":
            from matplotlib.backends.backend_pdf import PdfPages

            path = base.with_suffix(".pdf")
            with atomic_path(path) as tmp, PdfPages(tmp) as pdf:
                for k, page in enumerate(pages):
                    fig = _grid_page(page, ranks, labels, f"{objects.describe()} ({k + 1}/{len(pages)})")
                    pdf.savefig(fig)
            written.append(path)
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            for k, page in enumerate(pages):
                path = base.with_name(base.name + (f"-p{k + 1}" if len(pages) > 1 else "") + ".png")
                fig = _grid_page(page, ranks, labels, f"{objects.describe()} ({k + 1}/{len(pages)})")
                FigureCanvasAgg(fig)
                with atomic_path(path) as tmp:
                    fig.savefig(tmp, dpi=110, format="png")
                written.append(path)
    return written


def summary(paths: Sequence[Path]) -> str:
    if len(paths) == 1:
        return str(paths[0])
    return f"{len(paths)} files in {paths[0].parent}"
