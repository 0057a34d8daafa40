"""Talking to SLURM: one batched ``squeue`` + ``sacct`` poll for many jobs, ``scancel``.

* Text output only, with an explicit format, a ``|`` delimiter and no header
  (``squeue --noheader -o``, ``sacct --noheader --parsable2 --format``). JSON output
  changes schema between SLURM releases and is several times slower.
* One ``squeue`` call for all jobs (live view, authoritative while a job is known to
  the controller), then one ``sacct`` call only for jobs that squeue no longer shows
  active (final state, exit code). ``sacct -S <earliest submit day>`` keeps an
  old job that had the same id out; rows submitted before our own submission are
  dropped too.
* Garbled lines are skipped and reported, never fatal. A missing command, a timeout or
  disabled accounting become problems in the result, not exceptions.
* Every command is an argument list; nothing is ever passed through a shell.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from fmb_engine.jobs.states import State, normalise_slurm

DELIM = "|"
#: squeue fields: job id, array job id, array task id, state (long), submit, start, nodes, reason (last: free text).
SQUEUE_FORMAT = DELIM.join(["%i", "%A", "%K", "%T", "%V", "%S", "%N", "%r"])
SQUEUE_FIELDS = ("jobid", "array_job_id", "array_task_id", "state", "submit", "start", "nodes", "reason")
SACCT_FIELDS = ("JobID", "JobIDRaw", "State", "ExitCode", "Submit", "Start", "End", "NodeList", "Reason")
COMMAND_TIMEOUT_S = 60.0

Runner = Callable[..., subprocess.CompletedProcess]

_ID = re.compile(r"^\d+(_\d+)?$")
_RANGE = re.compile(r"^(?P<base>\d+)_\[(?P<spec>[0-9,\-]+)(%\d+)?\]$")


@dataclass
class SlurmRow:
    """What SLURM says about one job (or array task)."""

    job_id: str
    raw_state: str
    state: State
    source: str  # "squeue" | "sacct"
    reason: str | None = None
    exit_code: str | None = None
    submitted: float | None = None
    started: float | None = None
    ended: float | None = None
    node: str | None = None


@dataclass
class PollResult:
    rows: dict[str, SlurmRow] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    sacct_available: bool = True
    commands: list[list[str]] = field(default_factory=list)


# --- availability ------------------------------------------------------------------------

SUBMIT_COMMANDS = ("sbatch", "srun", "squeue", "sacct", "scancel")


def missing_commands(names: Iterable[str] = ("sbatch", "srun")) -> list[str]:
    """SLURM commands that are not on PATH (submitit needs ``srun`` on PATH to submit at all)."""
    return [name for name in names if shutil.which(name) is None]


def sinfo_responds(timeout_s: float = 10.0) -> tuple[bool, str]:
    """Whether a SLURM controller answers ``sinfo`` here; (ok, what it said or why not)."""
    if shutil.which("sinfo") is None:
        return False, "sinfo is not on PATH (no SLURM client installed)"
    try:
        out = subprocess.run(["sinfo", "--noheader", "-o", "%P|%a|%D|%t"], capture_output=True, text=True,
                             timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return False, f"sinfo did not answer within {timeout_s:.0f}s"
    except OSError as exc:
        return False, f"sinfo could not run: {exc}"
    if out.returncode != 0:
        return False, f"sinfo failed (exit {out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
    return True, out.stdout.strip()


# --- parsing -----------------------------------------------------------------------------

_NONE_TIMES = {"", "N/A", "Unknown", "None", "(null)", "0"}


def parse_time(text: str | None) -> float | None:
    """SLURM timestamps (``2026-11-28T09:12:14``, local time) -> epoch seconds; None for N/A."""
    if text is None or text.strip() in _NONE_TIMES:
        return None
    try:
        return time.mktime(dt.datetime.fromisoformat(text.strip()).timetuple())
    except ValueError:
        return None


def expand_job_id(job_id: str) -> list[str]:
    """``123``, ``123_4``, ``123_[0-3,7%2]`` -> individual ids; [] when unreadable."""
    job_id = job_id.strip()
    if _ID.match(job_id):
        return [job_id]
    match = _RANGE.match(job_id)
    if not match:
        return []
    out = []
    for part in match.group("spec").split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo) or int(hi) - int(lo) > 1_000_000:
                return []
            out.extend(f"{match.group('base')}_{i}" for i in range(int(lo), int(hi) + 1))
        elif part.isdigit():
            out.append(f"{match.group('base')}_{part}")
        else:
            return []
    return out


def _clip(line: str, n: int = 120) -> str:
    return line if len(line) <= n else line[: n - 3] + "..."


def parse_squeue(text: str) -> tuple[dict[str, SlurmRow], list[str]]:
    """Parse ``squeue --noheader --array -o SQUEUE_FORMAT`` output."""
    rows: dict[str, SlurmRow] = {}
    problems: list[str] = []
    n = len(SQUEUE_FIELDS)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(DELIM, n - 1)  # the reason (last) may contain anything
        if len(parts) != n:
            problems.append(f"squeue line {lineno} skipped: expected {n} fields, got {len(parts)}: {_clip(line)!r}")
            continue
        rec = dict(zip(SQUEUE_FIELDS, (p.strip() for p in parts)))
        ids = expand_job_id(rec["jobid"])
        if not ids:
            problems.append(f"squeue line {lineno} skipped: unreadable job id {rec['jobid']!r}")
            continue
        state = normalise_slurm(rec["state"])
        if state is State.UNKNOWN:
            problems.append(f"squeue line {lineno}: unknown state {rec['state']!r} for {rec['jobid']}")
        reason = rec["reason"] if rec["reason"] not in ("None", "(null)", "") else None
        for job_id in ids:
            rows[job_id] = SlurmRow(
                job_id=job_id, raw_state=rec["state"], state=state, source="squeue", reason=reason,
                submitted=parse_time(rec["submit"]), started=parse_time(rec["start"]),
                node=rec["nodes"] if rec["nodes"] not in ("", "(null)", "N/A") else None,
            )
    return rows, problems


def parse_sacct(text: str) -> tuple[dict[str, SlurmRow], list[str]]:
    """Parse ``sacct --noheader --parsable2 -X --format=SACCT_FIELDS`` output.

    When one id appears several times (requeues, id reuse), the latest submission wins.
    """
    rows: dict[str, SlurmRow] = {}
    problems: list[str] = []
    n = len(SACCT_FIELDS)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(DELIM)
        if len(parts) != n:
            if len(parts) > n:  # a reason containing the delimiter: glue the tail back together
                parts = parts[: n - 1] + [DELIM.join(parts[n - 1:])]
            else:
                problems.append(f"sacct line {lineno} skipped: expected {n} fields, got {len(parts)}: {_clip(line)!r}")
                continue
        rec = dict(zip(SACCT_FIELDS, (p.strip() for p in parts)))
        if "." in rec["JobID"]:  # a step (batch, extern, 0); -X should have removed these
            continue
        ids = expand_job_id(rec["JobID"])
        if not ids:
            problems.append(f"sacct line {lineno} skipped: unreadable job id {rec['JobID']!r}")
            continue
        state = normalise_slurm(rec["State"])
        if state is State.UNKNOWN:
            problems.append(f"sacct line {lineno}: unknown state {rec['State']!r} for {rec['JobID']}")
        reason = rec["Reason"] if rec["Reason"] not in ("None", "(null)", "") else None
        submitted = parse_time(rec["Submit"])
        for job_id in ids:
            old = rows.get(job_id)
            if old is not None and (old.submitted or 0) > (submitted or 0):
                continue
            rows[job_id] = SlurmRow(
                job_id=job_id, raw_state=rec["State"], state=state, source="sacct", reason=reason,
                exit_code=rec["ExitCode"] or None, submitted=submitted, started=parse_time(rec["Start"]),
                ended=parse_time(rec["End"]),
                node=rec["NodeList"] if rec["NodeList"] not in ("", "None assigned", "(null)") else None,
            )
    return rows, problems


# --- commands ----------------------------------------------------------------------------


def base_ids(job_ids: Iterable[str]) -> list[str]:
    """Distinct array/job ids to ask about (``123_4`` -> ``123``), numeric only, sorted."""
    out = {str(j).split("_", 1)[0] for j in job_ids}
    return sorted((b for b in out if b.isdigit()), key=int)


def squeue_command(job_ids: Sequence[str]) -> list[str]:
    return ["squeue", "--noheader", "--array", "--states=all", "-o", SQUEUE_FORMAT, "-j", ",".join(base_ids(job_ids))]


def sacct_command(job_ids: Sequence[str], since: dt.date) -> list[str]:
    return [
        "sacct", "--noheader", "--parsable2", "-X", "--format=" + ",".join(SACCT_FIELDS),
        "-S", since.isoformat(), "-E", "now", "-j", ",".join(base_ids(job_ids)),
    ]


def _run(cmd: list[str], runner: Runner, timeout_s: float) -> tuple[subprocess.CompletedProcess | None, str | None]:
    try:
        return runner(cmd, capture_output=True, text=True, timeout=timeout_s, check=False), None
    except FileNotFoundError:
        return None, f"{cmd[0]} is not on PATH"
    except subprocess.TimeoutExpired:
        return None, f"{cmd[0]} did not answer within {timeout_s:.0f}s"
    except OSError as exc:
        return None, f"{cmd[0]} could not run: {exc}"


def poll(job_ids: Sequence[str], submitted: dict[str, float] | None = None, runner: Runner = subprocess.run,
         timeout_s: float = COMMAND_TIMEOUT_S, clock_skew_s: float = 300.0) -> PollResult:
    """Ask SLURM once about many jobs: one ``squeue``, then one ``sacct`` for the rest.

    ``submitted`` maps job id -> our submission time (epoch): it sets ``sacct -S`` and
    drops sacct rows of an older job that had the same id.
    """
    result = PollResult()
    wanted = [str(j) for j in job_ids if base_ids([str(j)])]
    skipped = sorted(set(map(str, job_ids)) - set(wanted))
    if skipped:
        result.problems.append(f"not SLURM job ids, not polled: {', '.join(skipped)}")
    if not wanted:
        return result
    submitted = submitted or {}

    cmd = squeue_command(wanted)
    result.commands.append(cmd)
    out, err = _run(cmd, runner, timeout_s)
    if err:
        result.problems.append(err)
    elif out.returncode != 0:
        message = (out.stderr or out.stdout).strip()
        if "Invalid job id" not in message:  # all ids unknown to the controller: not an error
            result.problems.append(f"squeue failed (exit {out.returncode}): {_clip(message, 300)}")
    else:
        rows, problems = parse_squeue(out.stdout)
        result.problems.extend(problems)
        result.rows.update({k: v for k, v in rows.items() if k in set(wanted) or k.split("_")[0] in set(wanted)})

    rest = [j for j in wanted if j not in result.rows or result.rows[j].state not in (State.PENDING, State.RUNNING)]
    if not rest:
        return result
    times = [submitted[j] for j in rest if submitted.get(j)]
    since = dt.date.fromtimestamp(min(times) - clock_skew_s) if times else dt.date.today() - dt.timedelta(days=7)
    cmd = sacct_command(rest, since)
    result.commands.append(cmd)
    out, err = _run(cmd, runner, timeout_s)
    if err:
        result.problems.append(err)
        result.sacct_available = False
        return result
    if out.returncode != 0:
        message = (out.stderr or out.stdout).strip()
        result.sacct_available = False
        if "accounting storage is disabled" in message.lower():
            result.problems.append("sacct: accounting storage is disabled here; final states come from "
                                   "squeue (for MinJobAge) and the jobs' result files")
        else:
            result.problems.append(f"sacct failed (exit {out.returncode}): {_clip(message, 300)}")
        return result
    rows, problems = parse_sacct(out.stdout)
    result.problems.extend(problems)
    for job_id in rest:
        row = rows.get(job_id)
        if row is None:
            continue
        ours = submitted.get(job_id)
        if ours and row.submitted and row.submitted < ours - clock_skew_s:
            result.problems.append(f"sacct: ignored an older job with the reused id {job_id}")
            continue
        live = result.rows.get(job_id)
        if live is not None:  # squeue saw it ended; sacct adds the exit code and times
            if row.state in (State.PENDING, State.RUNNING):
                continue  # accounting still lags behind the controller: ask again next poll
            live.exit_code = row.exit_code
            live.ended = live.ended or row.ended
            live.started = live.started or row.started
            if live.state in (State.UNKNOWN,):
                result.rows[job_id] = row
            continue
        result.rows[job_id] = row
    return result


def scancel(job_ids: Sequence[str], runner: Runner = subprocess.run, timeout_s: float = COMMAND_TIMEOUT_S) -> list[str]:
    """Cancel jobs (array tasks by their ``123_4`` ids); returns problems (empty on success)."""
    ids = [str(j) for j in job_ids if _ID.match(str(j))]
    bad = sorted(set(map(str, job_ids)) - set(ids))
    problems = [f"not a SLURM job id, not cancelled: {b!r}" for b in bad]
    if not ids:
        return problems
    out, err = _run(["scancel", *ids], runner, timeout_s)
    if err:
        return problems + [err]
    if out.returncode != 0:
        problems.append(f"scancel failed (exit {out.returncode}): {_clip((out.stderr or out.stdout).strip(), 300)}")
    return problems
