"""The labelling loop with an oracle: how fast each strategy finds what the user hunts for.

An :class:`Oracle` holds the truth of every object (from the mock survey's injected ``anomaly_class``) but
answers only for the objects a strategy chose to inspect, and records every question: strategies never see
the truth array. Each round the strategy refits on the labels given so far, its order over the *unlabelled*
objects is taken, and the oracle labels the top ``batch``. ``random`` inspects in a seeded random order (the
floor every strategy must beat). The curve ``found[i]`` is the number of interesting objects among the
first ``i + 1`` inspections.

:func:`simulate` runs every strategy for every seed (a fresh oracle each time) into one long table,
:func:`summarize` gives mean and spread at fixed inspection counts. A seed sets the tie-break among equal
scores, the random order, and the strategies' own random draws (forest, GP restarts); the features are
computed once by the caller and are the same for every seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from fmb_engine.discover.config import SIMULATED as COMPARED
from fmb_engine.discover.strategies import STRATEGIES, make
from fmb_engine.errors import ConfigError, DataError

#: Inspection counts the summary reports (capped by the budget).
CHECKPOINTS = (50, 100, 200)
CURVE_COLUMNS = ("strategy", "seed", "inspected", "found")


class Oracle:
    """Answers "is this interesting?" for inspected rows only, and remembers what it was asked."""

    def __init__(self, interesting: np.ndarray) -> None:
        self._truth = np.asarray(interesting, dtype=bool)
        self.asked: list[int] = []

    def inspect(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        self.asked.extend(rows.tolist())
        return self._truth[rows].astype(np.float64)

    @property
    def total(self) -> int:
        """How many interesting objects exist: a summary for the report, never given to a strategy."""
        return int(self._truth.sum())


def next_batch(score: np.ndarray, labelled: np.ndarray, batch: int, tiebreak: np.ndarray) -> np.ndarray:
    """The ``batch`` unlabelled rows with the highest score; equal scores in the seeded ``tiebreak`` order."""
    open_rows = np.flatnonzero(~labelled)
    key = np.nan_to_num(score[open_rows], nan=-np.inf)
    order = np.lexsort((tiebreak[open_rows], -key))
    return open_rows[order[:batch]]


def discovery_curve(strategy: str, Z: np.ndarray, base: np.ndarray, oracle: Oracle, *, budget: int, batch: int,
                    seed: int, params: dict | None = None) -> np.ndarray:
    """Run the loop for one strategy and seed; returns ``found`` (min(budget, N),) int64."""
    n = Z.shape[0]
    budget = min(budget, n)
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(n)
    labelled = np.zeros(n, dtype=bool)
    rows: list[np.ndarray] = []
    answers: list[np.ndarray] = []
    while sum(r.size for r in rows) < budget:
        take = min(batch, budget - sum(r.size for r in rows))
        if strategy == "random":
            chosen = next_batch(np.zeros(n), labelled, take, tiebreak)
        else:
            idx = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
            y = np.concatenate(answers) if answers else np.empty(0)
            model = make(strategy, seed=seed, **(params or {})).fit(Z, base, idx, y)
            chosen = next_batch(model.score(Z, base), labelled, take, tiebreak)
        labelled[chosen] = True
        rows.append(chosen)
        answers.append(oracle.inspect(chosen))
    return np.cumsum(np.concatenate(answers)).astype(np.int64)


def simulate(Z: np.ndarray, base: np.ndarray, interesting: np.ndarray, strategies: Sequence[str] = COMPARED,
             seeds: int | Iterable[int] = 5, budget: int = 200, batch: int = 10,
             params: Mapping[str, dict] | None = None,
             progress: Callable[[str, int], None] | None = None) -> pd.DataFrame:
    """Discovery curves of ``strategies`` x ``seeds`` as one table (columns :data:`CURVE_COLUMNS`).

    ``interesting`` (N,) bool is the truth, held by a fresh :class:`Oracle` per curve; ``seeds`` is a count
    (0..n-1) or the seeds themselves; ``params`` gives per-strategy parameters by name. One row per
    inspection count 1..min(budget, N). ``progress(strategy, seed)`` is called before each curve.
    """
    n = Z.shape[0]
    base = np.asarray(base, dtype=np.float64)
    interesting = np.asarray(interesting, dtype=bool)
    if base.shape != (n,) or interesting.shape != (n,):
        raise DataError(f"features have {n} rows but the base score has {base.shape[0]} and the truth "
                        f"{interesting.shape[0]}: all three must describe the same objects")
    if budget < 1 or batch < 1:
        raise ConfigError(f"budget and batch must be at least 1 (got budget={budget}, batch={batch})")
    unknown = [s for s in strategies if s not in STRATEGIES and s not in ("random", "default")]
    if unknown:
        raise ConfigError(f"unknown strategy {', '.join(unknown)}; "
                          f"choose from random, default, {', '.join(STRATEGIES)}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    params = params or {}
    parts = []
    for name in strategies:
        for seed in seed_list:
            if progress is not None:
                progress(name, seed)
            found = discovery_curve(name, Z, base, Oracle(interesting), budget=budget, batch=batch, seed=seed,
                                    params=params.get(name))
            parts.append(pd.DataFrame({"strategy": name, "seed": seed,
                                       "inspected": np.arange(1, found.size + 1), "found": found}))
    return pd.concat(parts, ignore_index=True)[list(CURVE_COLUMNS)]


def summarize(curves: pd.DataFrame, at: Sequence[int] = CHECKPOINTS) -> pd.DataFrame:
    """Mean and std over seeds of ``found`` at each count in ``at`` (capped by each curve's length).

    Columns: strategy, inspected, mean, std (population std, 0 for one seed), seeds. Strategies keep the
    order they first appear in ``curves``.
    """
    rows = []
    for name, part in curves.groupby("strategy", sort=False):
        longest = int(part["inspected"].max())
        for count in sorted({min(int(a), longest) for a in at}):
            found = part.loc[part["inspected"] == count, "found"].to_numpy(dtype=np.float64)
            rows.append({"strategy": name, "inspected": count, "mean": float(found.mean()),
                         "std": float(found.std()), "seeds": int(found.size)})
    return pd.DataFrame(rows, columns=["strategy", "inspected", "mean", "std", "seeds"])
