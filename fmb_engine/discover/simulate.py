"""The labelling loop with an oracle: how fast each strategy finds what the user hunts for.

An :class:`Oracle` holds the truth of every object (from the mock survey's injected ``anomaly_class``) but
answers only for the objects a strategy chose to inspect, and records every question: strategies never see
the truth array. Each round the strategy refits on the labels given so far, its order over the *unlabelled*
objects is taken, and the oracle labels the top ``batch``. ``random`` inspects in a seeded random order (the
floor every strategy must beat). The curve ``found[i]`` is the number of interesting objects among the
first ``i + 1`` inspections.
"""

from __future__ import annotations

import numpy as np

from fmb_engine.discover.strategies import make

#: Classes of the mock survey that count as interesting by default: the physical rarities.
INTERESTING = ("broad_line_agn", "extreme_emission_line", "lensed_arc", "merger")


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
