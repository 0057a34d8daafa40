"""Fault injection, long form: N seeded kills per stage and signal, each followed by a rerun and a full comparison.

Runs the pipeline once uninterrupted (tests/faults/harness.py: mock of 200 objects at 16 px,
embed pca and cca, detect all with 2 epochs, evaluate, analyze rankings, figures outlier-grid),
then for every stage and signal (SIGKILL, SIGINT, SIGTERM) kills the command ``--kills`` times at
seeded points (after the k-th new file, plus a seeded delay), reruns it and compares every file
with the uninterrupted run. Prints one line per kill, the failures with the line that replays
each, and a summary table; exits 1 when any kill failed.

    python bench/faults.py [--kills 3] [--seed 1] [--stages mock,detect] [--signals SIGKILL] [--json out.json]

Not part of ``make bench`` (no speed target; it is a correctness sweep): 7 stages x 3 signals
x 3 kills takes about an hour on 2 busy cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import harness  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=3, help="kills per stage and signal")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000, help="first seed (printed)")
    parser.add_argument("--stages", default="all", help="comma-separated stage names, or all")
    parser.add_argument("--signals", default="all", help="comma-separated SIGKILL,SIGINT,SIGTERM, or all")
    parser.add_argument("--baseline", type=Path, help="reuse a baseline folder built by an earlier run (--keep)")
    parser.add_argument("--keep", type=Path, help="build the baseline here and keep it, with failed workspaces")
    parser.add_argument("--json", type=Path, help="write every trial as JSON here")
    args = parser.parse_args()
    stages = harness.STAGE_NAMES if args.stages == "all" else tuple(args.stages.split(","))
    signals = sorted(harness.SIGNALS) if args.signals == "all" else args.signals.split(",")
    print(f"seed {args.seed}: {args.kills} kills x {len(stages)} stages x {len(signals)} signals", flush=True)

    with tempfile.TemporaryDirectory(prefix="fmb-faults-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if args.baseline:
            base = harness.Baseline.load(args.baseline)
        else:
            t0 = time.monotonic()
            base = harness.build_baseline(root / "baseline", upto=max(stages, key=harness.STAGE_NAMES.index))
            print(f"baseline: {time.monotonic() - t0:.0f} s "
                  f"({', '.join(f'{k} {v:.0f}s' for k, v in base.seconds.items())})", flush=True)
        trials = []
        for i in range(args.kills):
            for stage in stages:
                for sig in signals:
                    trial = harness.kill_trial(base, harness.plan(args.seed + i, stage, sig, base.seconds.get(stage, 10.0)), root / "trials")
                    trials.append(trial)
                    print(f"{trial}  ({trial.seconds:.0f} s)", flush=True)
        failed = [t for t in trials if t.problems]
        for t in failed:
            print(f"\nFAILED {t}\n  replay: {t.replay()} (or bench/faults.py --seed {t.seed} --kills 1 "
                  f"--stages {t.stage} --signals {t.signal})")
        print("\n" + harness.summary(trials))
        print(f"\n{len(trials)} kills, {len(failed)} failed; seed {args.seed}")
        if args.json:
            args.json.write_text(harness.to_json(trials), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
