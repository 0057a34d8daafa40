"""Start-up cost of `fmb-engine`: wall time and peak RSS of fresh processes, against a bare `import typer, rich`.

Each round runs every command once, in turn, so all of them see the same machine load; the
median over the rounds is reported, as milliseconds and as a ratio to the bare start-up of
the same run (the issue's target: `--help` and `jobs list` within 2x). Peak RSS is the
child's own (``os.wait4``). ``--compare DIR`` measures another checkout of FMB in the same
rounds (its code first on PYTHONPATH), e.g. the code before a change:

    python bench/startup.py --runs 9 --compare /path/to/old/checkout

Commands that need a workspace run in a temporary one made by `fmb-engine init`. Bytecode
is cached (in a temporary PYTHONPYCACHEPREFIX, written by a warm-up round) as in an installed
package, also where PYTHONDONTWRITEBYTECODE is set, and nothing is written into the checkouts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The engine's entry point run as a script, so no installed console script is needed.
ENGINE = "import sys; from fmb_engine.cli.main import main; sys.argv[0] = 'fmb-engine'; main(sys.argv[1:])"
#: The floor Typer itself sets: a two-command app (typer 0.29 imports pydantic to coerce parameters,
#: and rich's help renderer for --help), to tell FMB's own start-up cost from the framework's.
TYPER_FLOOR = ("import typer; app = typer.Typer(); jobs = typer.Typer(); app.add_typer(jobs, name='jobs')\n"
               "@jobs.command('list')\ndef list_(limit: int = typer.Option(30, '--limit')): print('none')\n"
               "@jobs.command('show')\ndef show(ref: str = typer.Argument(...)): pass\napp()")
COMMANDS: dict[str, list[str]] = {
    "fmb-engine --help": ["--help"],
    "fmb-engine jobs list": ["jobs", "list"],
    "fmb-engine config show": ["config", "show"],
}


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{err}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="Rounds (the median is reported).")
    parser.add_argument("--compare", type=Path, help="Another FMB checkout measured in the same rounds (e.g. before).")
    args = parser.parse_args()

    trees = {"now": ROOT} | ({"before": args.compare.resolve()} if args.compare else {})
    with tempfile.TemporaryDirectory(prefix="fmb-bench-startup-") as tmp:
        drop = ("FMB_WORKSPACE", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE")
        base_env = {k: v for k, v in os.environ.items() if k not in drop} | {"PYTHONPYCACHEPREFIX": f"{tmp}/pycache"}
        envs = {label: base_env | {"PYTHONPATH": str(tree)} for label, tree in trees.items()}
        ws = Path(tmp) / "ws"
        subprocess.run([sys.executable, "-c", ENGINE, "init", str(ws)], env=envs["now"], check=True,
                       stdout=subprocess.DEVNULL)
        jobs: list[tuple[str, list[str], dict[str, str]]] = [
            ("python -c 'import typer, rich'", [sys.executable, "-c", "import typer, rich"], base_env),
            ("2-command Typer app --help (floor)", [sys.executable, "-c", TYPER_FLOOR, "--help"], base_env),
            ("2-command Typer app jobs list (floor)", [sys.executable, "-c", TYPER_FLOOR, "jobs", "list"], base_env)]
        for label, env in envs.items():
            for name, argv in COMMANDS.items():
                jobs.append((f"{name} [{label}]" if len(envs) > 1 else name, [sys.executable, "-c", ENGINE, *argv], env))
        for _, argv, env in jobs:  # warm the file cache (and byte-compile) before timing
            run_once(argv, env, ws)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in jobs}
        load_before = os.getloadavg()
        for _ in range(args.runs):
            for name, argv, env in jobs:
                samples[name].append(run_once(argv, env, ws))
        load_after = os.getloadavg()

    bare = statistics.median(w for w, _ in samples[jobs[0][0]])
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.runs} rounds; load average (1/5/15 min) "
          f"before {' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in load_after)}")
    print(f"{'command':<44} {'median ms':>10} {'x bare':>7} {'peak RSS MiB':>13}")
    for name, values in samples.items():
        wall = statistics.median(w for w, _ in values)
        rss = statistics.median(r for _, r in values)
        print(f"{name:<44} {wall * 1000:>10.0f} {wall / bare:>7.2f} {rss:>13.0f}")


if __name__ == "__main__":
    main()
