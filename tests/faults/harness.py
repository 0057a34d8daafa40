"""Fault injection through the real CLI: run a stage, kill it at a seeded point, rerun, compare.

Why: a stage that is killed (``kill -9``, Ctrl-C, ``scancel``'s SIGTERM) and run again must end
with exactly the outputs of a run that was never interrupted, and in between it must leave
nothing half-written under a final name. This module is the machinery shared by the pytest
suite (``tests/faults/``) and the long seeded form (``bench/faults.py``):

* :func:`build_baseline` runs the pipeline once, uninterrupted, on a tiny workspace and keeps
  a copy of the workspace before each stage and the digests of every file after it;
* :func:`kill_trial` copies the workspace as it was before a stage, runs the stage in its own
  process group, kills it with a signal once the k-th file has appeared in the workspace (plus
  a seeded delay), checks what the kill left (exit code, stderr, orphans, half-written files),
  reruns the command and compares every file with the baseline.

Every file is compared by a full digest of its bytes, except the files in :data:`CONTENT_DIGESTED`
(bytes hold times or absolute paths; compared by content instead) and :data:`NOT_COMPARED`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The detect settings of the fast tests (tests/engine/test_reruns.py): 2 epochs, small forests.
TASK = "detect:\n  epochs: 2\n  iforest_trees: 20\n  n_jobs: 1\n  top_k: 20\n"


@dataclass(frozen=True)
class Stage:
    """One command of the pipeline, as a user types it (without ``-w``)."""

    name: str
    argv: tuple[str, ...]


#: The pipeline in order; each stage runs on the workspace the previous ones left.
STAGES = (
    Stage("mock", ("data", "mock", "-n", "200", "--image-size", "16")),
    Stage("embed-pca", ("embed", "pca")),
    Stage("embed-cca", ("embed", "cca")),
    Stage("detect", ("detect", "all", "-c", "task.yaml")),
    Stage("evaluate", ("evaluate",)),
    Stage("analyze", ("analyze", "rankings")),
    Stage("figures", ("figures", "outlier-grid", "--system", "cca/fused/fisher", "--top-k", "4")),
)
STAGE_NAMES = tuple(s.name for s in STAGES)

#: Files whose bytes differ between two uninterrupted runs of the same command; each is compared
#: by its content instead (see :func:`file_digest`), with the reason.
CONTENT_DIGESTED = {
    ".h5": "HDF5 attributes hold the time of writing, the absolute survey path and timings (in the JSON "
           "'extra' attribute), and a resumed survey file lays out its chunks in another order; compared "
           "dataset by dataset and attribute by attribute, JSON attributes without the VOLATILE_KEYS",
    ".parquet": "the schema metadata (fmb:systems) names the detect run (run id, start time); compared "
                "as the table's rows plus the metadata without the VOLATILE_KEYS",
    ".pdf": "PDF metadata holds the creation date; compared without the /CreationDate and /ModDate entries",
}
#: Keys (in HDF5 attributes and JSON metadata) that legitimately differ between equal runs.
VOLATILE_KEYS = {"created": "time of writing", "started": "time of the run", "run_id": "id of the run",
                 "seconds": "a timing", "survey_path": "absolute path of the workspace's survey",
                 "versions": "package versions as recorded (the same packages here)"}
#: Files not compared at all, with the reason.
NOT_COMPARED = {
    "runs/*.json": "run manifests hold times, run ids, the command line and absolute paths; an "
                   "interrupted run adds one more manifest (status 'interrupted'), by design",
    ".*.lock": "write-lock files: a holder record (PID, time) beside each output",
    "fmb.yaml": "the workspace configuration; `data mock` records the active survey in it (compared "
                "by bytes all the same: it must be the baseline's)",
}

#: Transient names a writer uses before renaming to the final name.
TEMP_SUFFIXES = (".tmp", ".partial")
#: Folders of resume state (an embedding's finished shards): after a kill their files must be
#: readable, not equal to anything; a finished run removes them (or the comparison finds them).
RESUME_FOLDERS = (".shards",)


def engine() -> list[str]:
    """The installed ``fmb-engine`` of this interpreter's environment (or ``python -m``)."""
    script = Path(sys.executable).parent / "fmb-engine"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fmb_engine.cli.main"]


def environment() -> dict[str, str]:
    """Environment of the child: this checkout first on the path, plain uncoloured output."""
    env = {k: v for k, v in os.environ.items() if k != "FMB_WORKSPACE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1")
    return env


def command(stage: Stage, ws: Path) -> list[str]:
    return [*engine(), *stage.argv, "-w", str(ws)]


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _scrub(value):
    """A JSON value without the :data:`VOLATILE_KEYS` (at any depth)."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _stable_text(text: str | bytes) -> bytes:
    """A string attribute or metadata value; JSON objects are scrubbed of volatile keys."""
    text = text.decode() if isinstance(text, bytes) else text
    try:
        parsed = json.loads(text)
    except ValueError:
        return text.encode()
    return json.dumps(_scrub(parsed), sort_keys=True).encode()


def _array_bytes(value) -> bytes:
    """Bytes of an array's values (object arrays, e.g. variable-length strings, by their items)."""
    import numpy as np

    array = np.asarray(value)
    if array.dtype.kind == "O":
        return repr(array.tolist()).encode()
    return str(array.dtype).encode() + str(array.shape).encode() + np.ascontiguousarray(array).tobytes()


def _h5_digest(path: Path) -> str:
    import h5py

    parts: list[bytes] = []

    def attrs(name: str, obj) -> None:
        for key in sorted(obj.attrs):
            if key in VOLATILE_KEYS:
                continue
            value = obj.attrs[key]
            body = _stable_text(value) if isinstance(value, (str, bytes)) else _array_bytes(value)
            parts.append(f"{name}@{key}=".encode() + body)

    def visit(name: str, obj) -> None:
        attrs(name, obj)
        if isinstance(obj, h5py.Dataset):
            parts.append(name.encode() + _array_bytes(obj[()]))

    with h5py.File(path, "r") as f:
        attrs("/", f)
        f.visititems(visit)
    return _sha(*parts)


def _parquet_digest(path: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    parts = [k + b"=" + _stable_text(v) for k, v in sorted(meta.items()) if k != b"ARROW:schema"]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema.remove_metadata()) as writer:
        writer.write_table(table.replace_schema_metadata(None))
    return _sha(*parts, sink.getvalue().to_pybytes())


def file_digest(path: Path) -> str:
    """Full sha256 of the bytes, or of the content for the kinds in :data:`CONTENT_DIGESTED`."""
    if path.suffix == ".h5":
        return _h5_digest(path)
    if path.suffix == ".parquet":
        return _parquet_digest(path)
    data = path.read_bytes()
    if path.suffix == ".pdf":
        import re

        data = re.sub(rb"/(CreationDate|ModDate) \([^)]*\)", b"", data)
    return _sha(data)


def is_transient(path: Path) -> bool:
    return path.name.endswith(TEMP_SUFFIXES)


def is_resume_state(rel: Path) -> bool:
    return any(part.endswith(RESUME_FOLDERS) for part in rel.parts[:-1])


def is_compared(rel: Path) -> bool:
    if rel.parts[0] == "runs" or (rel.name.startswith(".") and rel.name.endswith(".lock")):
        return False
    return not is_transient(rel)


def digests(ws: Path) -> dict[str, str]:
    """Digest of every compared file of a workspace, by path relative to it."""
    return {str(p.relative_to(ws)): file_digest(p) for p in sorted(ws.rglob("*"))
            if p.is_file() and is_compared(p.relative_to(ws))}


def transient_files(ws: Path) -> list[str]:
    return sorted(str(p.relative_to(ws)) for p in ws.rglob("*") if p.is_file() and is_transient(p))


@dataclass
class Baseline:
    """An uninterrupted pipeline: the workspace before each stage, the digests after it, its timing."""

    root: Path
    before: dict[str, Path] = field(default_factory=dict)
    after: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path) -> Baseline:
        """A baseline built earlier under ``root`` (the workspace after a stage is the one before the next)."""
        base = cls(root)
        if (root / "seconds.json").is_file():
            base.seconds = json.loads((root / "seconds.json").read_text(encoding="utf-8"))
        names = [n for n in STAGE_NAMES if (root / f"before-{n}").is_dir()]
        for name, following in zip(names, [*names[1:], None]):
            base.before[name] = root / f"before-{name}"
            base.after[name] = digests(root / (f"before-{following}" if following else "ws"))
        return base


def new_workspace(ws: Path) -> Path:
    subprocess.run([*engine(), "init", str(ws)], env=environment(), check=True, capture_output=True)
    (ws / "task.yaml").write_text(TASK, encoding="utf-8")
    return ws


def build_baseline(root: Path, upto: str = STAGE_NAMES[-1]) -> Baseline:
    """Run the stages up to ``upto`` once, uninterrupted; keep the workspace before each stage."""
    base = Baseline(root)
    ws = new_workspace(root / "ws")
    for stage in STAGES[: STAGE_NAMES.index(upto) + 1]:
        base.before[stage.name] = root / f"before-{stage.name}"
        shutil.copytree(ws, base.before[stage.name], symlinks=True)
        t0 = time.monotonic()
        done = subprocess.run(command(stage, ws), env=environment(), cwd=ws, capture_output=True, text=True)
        base.seconds[stage.name] = time.monotonic() - t0
        if done.returncode != 0:
            raise RuntimeError(f"baseline {stage.name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        base.after[stage.name] = digests(ws)
    (root / "seconds.json").write_text(json.dumps(base.seconds), encoding="utf-8")
    return base


def descendants(pgid: int) -> list[int]:
    """PIDs of live (not zombie) processes in process group ``pgid`` (the killed command's own group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
#: Exit codes of a command stopped by each signal (README "Exit codes"; SIGKILL cannot be caught).
EXPECTED_RC = {"SIGKILL": -signal.SIGKILL, "SIGINT": 130, "SIGTERM": 143}


@dataclass
class Trial:
    """One kill: where, how, and what was found (``problems`` empty = passed)."""

    seed: int
    stage: str
    signal: str
    after_files: int | None  # None: a point in time (delay_s after the start), not after a file
    delay_s: float
    killed: bool = False
    rc: int | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def replay(self) -> str:
        return (f"FMB_FAULT_SEED={self.seed} FMB_FAULT_STAGES={self.stage} FMB_FAULT_SIGNALS=all "
                f"python -m pytest -p no:cacheprovider tests/faults/test_kills.py -k '{self.stage}-{self.signal}'")

    def __str__(self) -> str:
        state = "ok" if not self.problems else "FAILED: " + "; ".join(self.problems)
        if self.notes:
            state += " (note: " + "; ".join(self.notes) + ")"
        point = (f"at {self.delay_s:.2f}s" if self.after_files is None
                 else f"after file {self.after_files} +{self.delay_s:.2f}s")
        how = point if self.killed else f"finished before the kill ({point})"
        return f"seed={self.seed} stage={self.stage} {self.signal} {how} rc={self.rc}: {state}"


def plan(seed: int, stage: str, signal_name: str | None = None, stage_seconds: float = 10.0) -> Trial:
    """The kill point of a seed: which signal, and when.

    Half the points follow the stage's progress (after the k-th new file, k in 0..4, plus up
    to 1.5 s); the other half are a time, 20-100 % of the uninterrupted stage's duration
    (``stage_seconds``), since some stages write all their files in the last moment.
    """
    rng = random.Random(f"{seed}:{stage}")
    drawn = rng.choice(sorted(SIGNALS))  # drawn even when given, so a seed names the same point either way
    name = signal_name or drawn
    if rng.random() < 0.5:
        return Trial(seed=seed, stage=stage, signal=name, after_files=rng.randint(0, 4), delay_s=rng.uniform(0, 1.5))
    return Trial(seed=seed, stage=stage, signal=name, after_files=None, delay_s=rng.uniform(0.2, 1.0) * stage_seconds)


def _default_sigint() -> None:
    """Ctrl-C must reach the child even when the harness runs in the background (where SIGINT is ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_files(proc: subprocess.Popen, ws: Path, before: set[Path], k: int) -> bool:
    """Wait until ``k`` files not in ``before`` have appeared (temp files count); False if it ended first."""
    seen: set[Path] = set()
    while proc.poll() is None:
        if k == 0:
            return True
        seen |= {p for p in ws.rglob("*") if p.is_file() and p not in before}
        if len(seen) >= k:
            return True
        time.sleep(0.01)
    return False


def _completed_manifest(ws: Path, before: set[Path]) -> bool:
    """Did the run write its manifest with status 'completed' (so all its outputs were in place)?"""
    for path in (ws / "runs").glob("*.json"):
        if path not in before:
            try:
                if json.loads(path.read_text(encoding="utf-8")).get("status") == "completed":
                    return True
            except (OSError, ValueError):
                continue
    return False


def _stderr_problems(stderr: str, what: str) -> list[str]:
    if "Traceback" in stderr:
        return [f"{what}: traceback on stderr:\n{stderr[-2000:]}"]
    return []


def kill_trial(base: Baseline, trial: Trial, work: Path) -> Trial:
    """Run ``trial`` on a copy of the workspace before its stage; fill in what it found."""
    t0 = time.monotonic()
    stage = STAGES[STAGE_NAMES.index(trial.stage)]
    ws = work / f"{trial.stage}-{trial.signal}-{trial.seed}"
    shutil.rmtree(ws, ignore_errors=True)
    shutil.copytree(base.before[trial.stage], ws, symlinks=True)
    before_files = {p for p in ws.rglob("*") if p.is_file()}
    old = digests(ws)
    proc = subprocess.Popen(command(stage, ws), env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ws, start_new_session=True, preexec_fn=_default_sigint)
    try:
        if _wait_for_files(proc, ws, before_files, trial.after_files or 0):
            time.sleep(trial.delay_s)
            if proc.poll() is None:
                os.kill(proc.pid, SIGNALS[trial.signal])
                trial.killed = True
        _, stderr = proc.communicate(timeout=300)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    trial.rc = proc.returncode
    problems = trial.problems
    if trial.killed:
        if (trial.signal != "SIGKILL" and proc.returncode == -SIGNALS[trial.signal]
                and _completed_manifest(ws, before_files)):
            trial.notes.append(f"{trial.signal} came while the finished run was shutting down "
                               "(Python restores the default handlers then): the work was complete")
        elif proc.returncode not in (EXPECTED_RC[trial.signal], 0):
            problems.append(f"exit code {proc.returncode}, expected {EXPECTED_RC[trial.signal]}")
        problems += _stderr_problems(stderr, "killed run")
    elif proc.returncode != 0:
        problems.append(f"uninterrupted run exited {proc.returncode}: {stderr[-2000:]}")
    time.sleep(0.2)  # children that outlive their parent would still be in the group now
    orphans = descendants(proc.pid)
    if orphans:
        problems.append(f"orphaned processes of the killed command: {orphans}")
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
    problems += _half_written(ws, old, base.after[trial.stage])
    if trial.signal != "SIGKILL" and (left := transient_files(ws)) and not all(p.endswith(".partial") for p in left):
        problems.append(f"temp files left after {trial.signal} (the run had time to clean up): {left}")
    rerun = subprocess.run(command(stage, ws), env=environment(), cwd=ws, capture_output=True, text=True,
                           timeout=600)
    if rerun.returncode != 0:
        problems.append(f"rerun exited {rerun.returncode}: {rerun.stderr[-2000:]}")
    else:
        problems += _stderr_problems(rerun.stderr, "rerun")
        problems += compare(base.after[trial.stage], digests(ws))
        if leftovers := [p for p in transient_files(ws) if p.endswith(".partial")]:
            problems.append(f"partial files left after the rerun completed: {leftovers}")
        if stale := [p for p in transient_files(ws) if p.endswith(".tmp")]:
            trial.notes.append(f"temp files of the killed run still there after the rerun: {stale}")
    trial.seconds = time.monotonic() - t0
    if not problems:
        shutil.rmtree(ws, ignore_errors=True)
    return trial


def _half_written(ws: Path, old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Files under a final name right after the kill must be the old or the new version, whole."""
    found = []
    for rel, path in ((str(p.relative_to(ws)), p) for p in sorted(ws.rglob("*")) if p.is_file()):
        if not is_compared(Path(rel)):
            continue
        try:
            d = file_digest(path)
            if path.suffix == ".json" and is_resume_state(Path(rel)):
                json.loads(path.read_text(encoding="utf-8"))
        except Exception as exc:  # an unreadable file under a final name is exactly what we look for
            found.append(f"{rel} is unreadable after the kill ({type(exc).__name__}: {exc})")
            continue
        if d not in (old.get(rel), new.get(rel)) and not is_resume_state(Path(rel)):
            found.append(f"{rel} after the kill is neither the previous nor the finished version")
    return found


def compare(expected: dict[str, str], got: dict[str, str]) -> list[str]:
    """Differences between the baseline's files and a rerun's, one line each."""
    problems = [f"missing after the rerun: {p}" for p in sorted(expected.keys() - got.keys())]
    problems += [f"extra after the rerun: {p}" for p in sorted(got.keys() - expected.keys())]
    problems += [f"differs from the uninterrupted run: {p}" for p in sorted(expected.keys() & got.keys())
                 if expected[p] != got[p]]
    return problems


def summary(trials: list[Trial]) -> str:
    """A table: per stage and signal, kills (killed / finished first) and failures."""
    rows: dict[tuple[str, str], list[int]] = {}
    for t in trials:
        row = rows.setdefault((t.stage, t.signal), [0, 0, 0])
        row[0 if t.killed else 1] += 1
        row[2] += bool(t.problems)
    lines = [f"{'stage':<10} {'signal':<8} {'killed':>6} {'done1st':>7} {'failed':>6}"]
    for (stage, sig), (k, d, f) in sorted(rows.items(), key=lambda r: (STAGE_NAMES.index(r[0][0]), r[0][1])):
        lines.append(f"{stage:<10} {sig:<8} {k:>6} {d:>7} {f:>6}")
    return "\n".join(lines)


def to_json(trials: list[Trial]) -> str:
    return json.dumps([t.__dict__ for t in trials], indent=1)


# --- environment faults -------------------------------------------------------------------------

def raw_digests(ws: Path) -> dict[str, str]:
    """sha256 of the bytes of every file (manifests included): what a failed run must leave as it was."""
    return {str(p.relative_to(ws)): _sha(p.read_bytes()) for p in sorted(ws.rglob("*")) if p.is_file()}


def fs_bytes(ws: Path) -> int:
    """What a copy of ``ws`` takes on a tmpfs: whole pages per file."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in ws.rglob("*") if p.is_file())


def mount(*args: str) -> str | None:
    """Run ``mount`` (we need root); the reason it failed, or None."""
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, check=False)


def drop_privileges() -> tuple[list[str], str] | None:
    """A prefix that runs a command as a user for whom a root-owned folder is not writable, and who it is.

    ``nobody`` when it can run this interpreter; else root without any capability (``setpriv``
    with empty capability sets), for whom file modes count as for any other owner. None when
    neither works (not root, no setpriv).
    """
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None
    candidates = (
        (["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"], "nobody"),
        (["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"], "root without capabilities"),
    )
    for prefix, who in candidates:
        probe = subprocess.run([*prefix, sys.executable, "-c", "import fmb_engine"], env=environment(),
                               capture_output=True, cwd="/")
        if probe.returncode == 0:
            return prefix, who
    return None


def run_stage(stage: Stage, ws: Path, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), *command(stage, ws)], env=environment(), cwd=ws,
                          capture_output=True, text=True, timeout=600)


def refusal_problems(done: subprocess.CompletedProcess, code: int, ws: Path) -> list[str]:
    """A refused run: the exit code, one line ``error: ...`` naming a path under ``ws``, no traceback."""
    problems = []
    if done.returncode != code:
        problems.append(f"exit code {done.returncode}, expected {code}")
    if "Traceback" in done.stderr:
        problems.append("traceback on stderr")
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    if len(errors) != 1:
        problems.append(f"expected one 'error:' line, found {len(errors)}")
    elif str(ws) not in errors[0]:
        problems.append(f"the error does not name a path in the workspace: {errors[0]}")
    if problems:
        problems.append(f"stderr:\n{done.stderr[-3000:]}")
    return problems
