"""The ``tui`` config section: label set, keymap and triage settings of ``fmb-tui``.

Engine-side on purpose (no UI import): ``fmb-engine config show tui`` and the layered
``load("tui", ws)`` know it, and label exports use the same label set. It is the explorer's
settings, not triage logic, so it sits with the other stage-less schemas in ``config/``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from fmb_engine.config.schemas import Section

#: Default triage labels, on keys 1..7 in this order.
DEFAULT_LABELS: tuple[str, ...] = ("artefact", "interesting", "AGN", "lens", "merger", "normal", "skip")
#: A label is a short word: letters, digits, and . _ + - (it is a CSV value and a key hint).
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$")


class TuiConfig(Section):
    """`fmb-tui`: triage labels, key bindings and refresh intervals of the terminal explorer."""

    labels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LABELS),
        description="Triage labels, bound to the number keys 1..9 in this order (at most 9).",
    )
    keymap: dict[str, str] = Field(
        default_factory=dict,
        description="Key overrides: action id -> keys, e.g. {triage.next: 'down,n'}. "
        "`fmb-tui --keys` lists every action id and its default key.",
    )
    top_k: int = Field(100, ge=1, le=10_000_000, description="Size of the top-k the triage progress bar counts.")
    user: str | None = Field(None, description="Name recorded with every label; none = the login name.")
    system: str | None = Field(
        None, description="Ranking opened first (model/modality/method); none = the first fused system, else the first."
    )
    label_journal: Literal["wal", "delete"] = Field(
        "wal",
        description="SQLite journal of triage/labels.sqlite: wal (concurrent readers; all writers on one host) "
        "or delete (workspaces on a filesystem without shared-memory support, written from several hosts).",
    )
    jobs_poll_s: float = Field(5.0, ge=1.0, le=3600.0, description="Seconds between two polls of the job states.")
    log_poll_s: float = Field(1.0, ge=0.2, le=60.0, description="Seconds between two reads of a followed job log.")
    smoothing: int = Field(5, ge=1, le=101, description="Initial boxcar width (pixels) of the spectrum plot.")
    preview: bool = Field(True, description="Show the spectrum and image of the current candidate under the ranking.")
    advance: bool = Field(False, description="After a label key, move on to the next candidate.")

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: list[str]) -> list[str]:
        if not 1 <= len(labels) <= 9:
            raise ValueError(f"give 1 to 9 labels (keys 1..9), got {len(labels)}")
        for label in labels:
            if not _LABEL.match(label):
                raise ValueError(
                    f"label {label!r} must be one word of at most 32 letters, digits or . _ + - (starting with a letter or digit)"
                )
        lowered = [label.lower() for label in labels]
        dupes = sorted({label for label in lowered if lowered.count(label) > 1})
        if dupes:
            raise ValueError(f"labels must be unique (ignoring case): {', '.join(dupes)} repeated")
        return labels

    @field_validator("keymap")
    @classmethod
    def _check_keymap(cls, keymap: dict[str, str]) -> dict[str, str]:
        out = {}
        for action, keys in keymap.items():
            if not str(action).strip():
                raise ValueError("empty action id in keymap")
            parts = [k.strip() for k in str(keys).split(",")]
            if not all(parts) or any(any(c.isspace() for c in k) for k in parts):
                raise ValueError(
                    f"keys of {action!r} must be key names separated by commas (e.g. 'j,down' or 'ctrl+s'), got {keys!r}"
                )
            out[str(action)] = ",".join(parts)
        return out


__all__ = ["DEFAULT_LABELS", "TuiConfig"]
