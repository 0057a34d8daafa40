"""The ``jobs`` config section: which executor runs stages, and the SLURM parameters.

Named in :data:`fmb_engine.config.SECTIONS`, which imports this light module (pydantic
only) when ``fmb-engine config show jobs`` / ``template jobs`` or ``load("jobs", ...)``
use the section.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fmb_engine.config.schemas import Section

ExecutorName = Literal["local", "slurm", "debug"]


class JobsConfig(Section):
    """`--executor` and SLURM parameters of submitted stages (`fmb-engine jobs ...`)."""

    executor: Literal["local", "slurm", "debug", "auto"] = Field(
        "local",
        description="Where submitted stages run: local (subprocesses here), slurm (sbatch job arrays), "
        "debug (in this process, at once). auto = slurm when sbatch and srun are on PATH, else local "
        "(the choice is always printed).",
    )
    partition: str | None = Field(None, description="SLURM partition (sbatch --partition); none = the cluster default.")
    account: str | None = Field(None, description="SLURM account to charge (sbatch --account).")
    qos: str | None = Field(None, description="SLURM quality of service (sbatch --qos).")
    constraint: str | None = Field(None, description="SLURM node feature constraint (sbatch --constraint), e.g. a100.")
    gpus_per_node: int = Field(0, ge=0, le=64, description="GPUs per job (array task); 0 = CPU only.")
    cpus_per_task: int = Field(1, ge=1, le=1024, description="CPU cores per job (array task).")
    mem_gb: float | None = Field(
        None, gt=0, description="Memory per job in GB (sbatch --mem); none = the cluster default."
    )
    timeout_min: int = Field(60, ge=1, le=60 * 24 * 14, description="Wall-clock limit per job in minutes.")
    array_parallelism: int = Field(
        32, ge=1, le=100_000, description="Array tasks allowed to run at once (sbatch --array=0-N%K)."
    )
    setup: list[str] = Field(
        default_factory=list,
        description="Shell lines run in the SLURM job before the stage, e.g. 'module load cuda/12.4'.",
    )
    python: str | None = Field(
        None,
        description="Python command that runs the job on the compute node; none = this interpreter "
        "(the venv's python, which must be on the shared filesystem).",
    )
    max_num_timeout: int = Field(
        3, ge=0, le=100, description="Times a job that hits its time limit is requeued (it resumes where it stopped)."
    )
    signal_delay_s: int = Field(
        90, ge=5, le=3600, description="Seconds before the time limit at which the job is told to checkpoint."
    )
    sbatch_extra: dict[str, str] = Field(
        default_factory=dict,
        description="Extra sbatch options without the leading dashes, e.g. {mail-type: END}.",
    )
    registry_journal: Literal["wal", "delete"] = Field(
        "wal",
        description="SQLite journal of jobs/registry.sqlite: wal (fast, concurrent readers; all writers "
        "on one host) or delete (for filesystems without shared-memory support).",
    )

    @field_validator("setup")
    @classmethod
    def _no_newlines(cls, lines: list[str]) -> list[str]:
        for line in lines:
            if "\n" in line or "\r" in line:
                raise ValueError("each setup entry must be one line; use several entries")
        return lines

    @field_validator("sbatch_extra")
    @classmethod
    def _plain_keys(cls, extra: dict[str, str]) -> dict[str, str]:
        for key, value in extra.items():
            if not key or key.startswith("-") or any(c.isspace() for c in key) or "=" in key:
                raise ValueError(f"sbatch_extra key {key!r} must be a bare option name such as mail-type")
            if "\n" in str(value):
                raise ValueError(f"sbatch_extra value of {key!r} must be one line")
        return extra


__all__ = ["JobsConfig", "ExecutorName"]
