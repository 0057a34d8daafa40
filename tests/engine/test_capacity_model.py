"""The capacity model of bench/capacity.py: known linear laws are recovered and projected onto K shards."""

from __future__ import annotations

import math

import pytest

from bench.capacity import FIT, NODE, SHARD, fit_law, fit_model, peak_memory, phase_cpu, phase_kind, project, report

SIZES = (100_000, 300_000, 1_000_000)


def _detect(n: int, wobble: float = 0.0) -> dict:
    """A detect record whose phases follow known laws (seconds), plus ``wobble`` on the flows' fit."""
    phases = {"sample:synthetic": 1.0 + 10e-6 * n, "flows:synthetic": 40.0 + wobble,
              "score:synthetic/image": 0.5 + 6e-6 * n, "mismatch:synthetic": 5.0 + 10e-6 * n,
              "fuse": 0.2 + 7e-6 * n, "systems": 0.3 + 9e-6 * n}
    wall = sum(phases.values()) + 4.0 + 20e-6 * n  # outside the phases: start-up, reading, writing
    return {"stage": "detect", "objects": n, "wall_s": wall, "cpu_s": wall,
            "peak_rss_mb": 1800 + 100e-6 * n, "phases_s": phases}


def _knn(n: int) -> dict:
    cpu = 3.0 + 90e-6 * n
    return {"stage": "knn", "objects": n, "wall_s": cpu, "cpu_s": cpu, "peak_rss_mb": 500 + 4000e-6 * n, "phases_s": {}}


def test_phase_times_become_cpu_seconds_whatever_the_load():
    quiet = _detect(300_000)
    loaded = quiet | {"wall_s": 2 * quiet["wall_s"], "phases_s": {k: 2 * v for k, v in quiet["phases_s"].items()}}
    threaded = quiet | {"cpu_s": 1.5 * quiet["cpu_s"]}  # extra threads: CPU beyond the wall, shared out
    assert phase_cpu(loaded) == pytest.approx(phase_cpu(quiet))
    assert sum(phase_cpu(threaded).values()) == pytest.approx(threaded["cpu_s"])
    assert phase_cpu(quiet)["other"] == pytest.approx(4.0 + 20e-6 * 300_000)
    assert phase_cpu(_knn(300_000)) == {}


def test_fit_law_recovers_a_line_and_its_residuals():
    law = fit_law([1e5, 3e5, 1e6], [2 + 3e-5 * n for n in (1e5, 3e5, 1e6)])
    assert law.a == pytest.approx(2) and law.b == pytest.approx(3e-5) and law.spread < 1e-9
    noisy = fit_law([1e5, 1e5, 1e6], [10, 12, 40])
    assert noisy.points == 3 and noisy.spread == pytest.approx(1.0)  # the two repeats straddle the line
    flat = fit_law([1e6, 1e6], [5, 7])
    assert (flat.a, flat.b, flat.spread) == (6, 0, 1)
    with pytest.raises(ValueError):
        fit_law([], [])


def test_phase_kinds_follow_the_sharded_path():
    assert phase_kind("detect/flows") == FIT
    assert phase_kind("detect/score:image") == SHARD and phase_kind("detect/mismatch") == SHARD
    assert phase_kind("detect/fuse") == NODE and phase_kind("detect/systems") == NODE
    assert phase_kind("detect") == SHARD  # its peak RSS is a shard's: fit sample + one chunk
    assert phase_kind("knn") == NODE and phase_kind("umap/umap:image") == NODE


def test_fit_model_recovers_the_phase_and_stage_laws():
    model = fit_model([_detect(n) for n in SIZES] + [_knn(n) for n in SIZES])
    score = model["detect/score:image"]["cpu"]
    assert score["a"] == pytest.approx(0.5) and score["b"] == pytest.approx(6e-6)
    assert model["detect/flows"]["cpu"]["b"] == pytest.approx(0, abs=1e-12)
    other = model["detect/other"]["cpu"]  # CPU outside the phases: start-up, reading, writing
    assert other["a"] == pytest.approx(4.0) and other["b"] == pytest.approx(20e-6)
    assert model["detect"]["rss"]["b"] == pytest.approx(100e-6)
    assert model["knn"]["cpu"]["b"] == pytest.approx(90e-6) and model["knn"]["kind"] == NODE


def test_projection_on_shards():
    model = fit_model([_detect(n, wobble=w) for n in SIZES for w in (-2.0, 2.0)] + [_knn(n) for n in SIZES])
    n = 1e7
    one, four = project(model, n, 1), project(model, n, 4)
    # the flows' fit is paid once, its mean, whatever N and K
    assert one["detect/flows"]["cpu_s"] == pytest.approx(40.0) == four["detect/flows"]["wall_s"]
    # scoring: N/K rows per shard side by side; all shards' CPU = K * a + b * N
    assert four["detect/score:image"]["wall_s"] == pytest.approx(0.5 + 6e-6 * n / 4)
    assert four["detect/score:image"]["cpu_s"] == pytest.approx(4 * 0.5 + 6e-6 * n)
    # merging stays on one node over all N
    assert four["detect/fuse"]["wall_s"] == pytest.approx(0.2 + 7e-6 * n) == one["detect/fuse"]["wall_s"]
    mem1, mem16 = peak_memory(model, n, 1), peak_memory(model, n, 16)
    assert mem16["detect"] == pytest.approx(1800 + 100e-6 * n / 16)
    assert mem16["knn"] == mem1["knn"] == pytest.approx(500 + 4000e-6 * n)  # a single-node job
    text = report(model, n, [1, 4])
    assert "| knn |" in text and "39.6 GiB" in text  # knn at 10^7: 40,500 MB = 39.6 GiB
    assert not any(math.isnan(v["wall_s"]) for v in four.values())
