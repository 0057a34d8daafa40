"""Stage door of ``fmb-engine evaluate``: how well each system finds the injected anomalies.

Reads ``scores/systems.parquet`` and the truth: the survey's ``anomaly_class``, or, when the
table was made from survey-free synthetic embeddings (``embed synthetic``), the
``anomaly_class`` column those files carry (:func:`synthetic_runs`). Writes
``analysis/evaluation.csv`` (tidy: system, subset, metric, k, value, counts) and
``analysis/evaluation.md`` (AUROC and AP per system, overall and per class).
Metrics and their definitions are in :mod:`fmb_engine.detect.metrics`.

A system whose score is constant over the labelled objects ranks nothing: its
AUROC is 0.5 and its precision@k the positives' share by construction (ties
never follow row order). It is still evaluated, and named in the manifest's
warnings, the CLI output and the report's notes, so a chance-level line is
never mistaken for a weak detector. An undefined metric (a subset without
positives or negatives, a system that scored none of the labelled objects) is
an empty cell, explained in the same notes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmb_engine import lineage, locks, publish, rankings
from fmb_engine.csv_tables import write_csv
from fmb_engine.detect.degenerate import constancy
from fmb_engine.detect.metrics import evaluate_scores, to_markdown
from fmb_engine.errors import DataError
from fmb_engine.rankings import synthetic_runs  # the rule lives with the systems table (the explorer asks it too)
from fmb_engine.publish import StagedSet
from fmb_engine.survey.store import SurveyReader
from fmb_engine.workspace import Workspace, atomic_write_text

KS = (10, 50, 100)


def _synthetic_truth(ws: Workspace, files: list[Path]) -> tuple[pd.DataFrame, str]:
    """(object_id, anomaly_class) of survey-free runs, and their population digest.

    The runs share one population (detect refuses others), whose truth does not depend on the
    dimensions, so the first file's columns are the truth of all of them."""
    from fmb_engine.embed.store import EmbeddingReader

    with EmbeddingReader(files[0]) as reader:
        columns = reader.columns()
        if "anomaly_class" not in columns:
            raise DataError(f"{files[0]}: no anomaly_class column; it is not a file of `fmb-engine embed synthetic`")
        truth = pd.DataFrame({"object_id": reader.object_ids.astype(str), "anomaly_class": columns["anomaly_class"]})
        return truth, reader.survey_digest


def evaluate_workspace(ws: Workspace, survey: Path | None, ks: tuple[int, ...] = KS) -> Any:
    """Evaluate every system against the survey's truth; ``survey`` None: against the truth of the
    survey-free synthetic files the systems table was made from."""
    from fmb_engine.stage_run import StageResult, stage_run

    with stage_run(ws, "evaluate", {"ks": list(ks), "survey": str(survey) if survey else None}) as manifest:
        systems_path = ws.folder("scores") / "systems.parquet"
        if not systems_path.is_file():
            raise DataError(f"{systems_path} not found: run `fmb-engine detect all` first")
        synthetic = synthetic_runs(ws)
        if survey is None:
            if not synthetic:
                raise DataError(f"{systems_path} was made from a survey's embeddings: evaluating it needs that survey")
            rankings.check_current(ws)  # one published set, of the synthetic files the workspace holds now
            truth, digest = _synthetic_truth(ws, synthetic)
            manifest.record("survey_free", True)
            manifest.input_digest("synthetic_population", digest)
            source = lineage.key_of(ws, synthetic[0])
        else:
            if synthetic:
                raise DataError(f"{systems_path} was made from survey-free synthetic embeddings "
                                f"({', '.join(p.name for p in synthetic)}): their files hold the truth; leave out --survey")
            rankings.check_current(ws, survey=Path(survey))  # the scores must be of this survey, and one published set
            with SurveyReader(survey) as reader:
                truth = reader.table()[["object_id", "anomaly_class"]]
                digest = reader.digest
            manifest.input_digest("survey_digest", digest)
            source = str(survey)
        if not (truth["anomaly_class"] != "").any():
            raise DataError(f"{source} has no anomaly_class labels: evaluation needs injected truth "
                            "(the mock survey, or `embed synthetic` with --outlier-fraction > 0)")
        manifest.input("systems", systems_path)
        table = pd.read_parquet(systems_path).merge(truth, on="object_id", how="inner")
        frames = []
        for col in (c for c in table.columns if c.startswith("score:")):
            system = col.split(":", 1)[1]
            scored = table[np.isfinite(table[col].to_numpy(dtype=float))]
            if (lost := len(table) - len(scored)):
                manifest.dropped(f"{system}:not_scored", lost)
            values = scored[col].to_numpy(dtype=float)
            if not len(values):
                manifest.warn(f"{system}: scored none of the labelled objects; every metric is undefined (empty)")
            elif kind := constancy(values):
                manifest.warn(f"{system}: score {kind} over its {len(values)} labelled objects; it ranks nothing "
                              "(chance level: AUROC about 0.5, precision about the positives' share)")
            metrics = evaluate_scores(scored["anomaly_class"].to_numpy(), values, ks=ks)
            frames.append(metrics.assign(system=system))
        result = pd.concat(frames, ignore_index=True)
        result = result[["system", *[c for c in result.columns if c != "system"]]]
        overview = summary_table(result)
        folder = ws.folder("analysis")
        out_csv, out_md = folder / "evaluation.csv", folder / "evaluation.md"
        inputs, stamps = lineage.identify(ws, [lineage.key_of(ws, systems_path)])
        if survey is not None:
            inputs[lineage.SURVEY] = digest
        with locks.hold(out_csv, "the evaluation report analysis/evaluation.*"), StagedSet(folder, manifest.run_id) as stage:
            publish.clean(folder)
            write_csv(result, stage.path(out_csv))
            atomic_write_text(stage.path(out_md), markdown_report(result, overview, manifest.warnings))
            lineage.write_records(folder, stage.path(folder / lineage.RECORD_FILE), [out_csv, out_md], inputs, stamps)
            stage.publish()
        manifest.output("csv", out_csv)
        manifest.output("markdown", out_md)
        manifest.count("systems", int(result["system"].nunique()))
    return StageResult({"evaluation": out_csv, "report": out_md}, manifest.path,
                       {"overview": overview, "warnings": manifest.warnings})


def summary_table(result: pd.DataFrame) -> pd.DataFrame:
    """One row per system: overall AUROC, AP, precision@100 and the AUROC per anomaly class."""
    overall = result[result["subset"] == "all"]
    wide = overall.pivot_table(index="system", columns=["metric", "k"], values="value", aggfunc="first", dropna=False)
    out = pd.DataFrame(index=wide.index)
    out["auroc"] = overall[overall["metric"] == "auroc"].set_index("system")["value"]
    out["ap"] = overall[overall["metric"] == "average_precision"].set_index("system")["value"]
    for k in KS:
        sel = overall[(overall["metric"] == "precision@k") & (overall["k"] == k)].set_index("system")["value"]
        if len(sel):
            out[f"p@{k}"] = sel
    per_class = result[(result["subset"] != "all") & (result["metric"] == "auroc")]
    out = out.join(per_class.pivot_table(index="system", columns="subset", values="value", aggfunc="first"))
    return out.sort_values("auroc", ascending=False)


def markdown_report(result: pd.DataFrame, overview: pd.DataFrame, warnings: list[str] = ()) -> str:
    n_pos = int(result[(result["subset"] == "all")]["n_positive"].iloc[0])
    n_neg = int(result[(result["subset"] == "all")]["n_negative"].iloc[0])
    head = (f"# Evaluation against injected anomalies\n\n{n_pos} labelled anomalies, {n_neg} normal objects. "
            "AUROC and average precision (AP) of each system's score; per class: that class against the normal objects.\n\n")
    notes = [*warnings]
    if overview.isna().to_numpy().any():
        notes.append("An empty cell is an undefined metric: AUROC needs positives and negatives in the subset, "
                     "AP and recall need positives.")
    tail = "\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes) if notes else ""
    return head + to_markdown(overview.reset_index(), floatfmt=".3f") + tail + "\n"
