"""What the explorer says about an active order (``discover rerank``), and when it re-ranks by itself (no UI imports).

An active system's record (``fmb_engine.rankings.active_records``) holds the digest and the
label store's version of the labels its order reflects. The explorer compares that digest
with the labels it holds now; when they differ it rebuilds the labels as they were at that
version from the store's history (every label event after it carries the value it
replaced), so it can say how many objects' labels changed since — whoever changed them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fmb_engine.rankings import ACTIVE_METHOD, parse_system


@dataclass(frozen=True)
class ActiveState:
    """What one check found: the record compared (None: nothing re-ranked yet) and how stale it is.

    ``stale`` counts objects whose label differs from those the order reflects (every label
    when there is no record); ``digest`` is the digest of the labels compared, so one label
    state triggers at most one automatic re-rank; ``auto_every`` is ``discover.auto_every``.
    """

    system: str | None
    record: dict[str, Any] | None
    stale: int
    digest: str
    auto_every: int = 0
    problem: str | None = None


def is_active(system: str | None) -> bool:
    return bool(system) and parse_system(system).method == ACTIVE_METHOD


def latest_record(records: dict[str, dict]) -> tuple[str | None, dict | None]:
    """The active system re-ranked last (what the next automatic re-rank would replace)."""
    if not records:
        return None, None
    name = max(records, key=lambda s: str(_as_dict(records[s]).get("time") or ""))
    return name, _as_dict(records[name])


def labels_at(current: dict[str, str], events: Iterable[Any], version: int) -> dict[str, str]:
    """The labels as they were when the store's version was ``version``.

    ``current`` is the store's labels now, ``events`` its history (oldest first; each event has
    ``id``, ``field``, ``object_id`` and ``previous``): the first label event after ``version``
    of an object names the label it had then.
    """
    then = dict(current)
    seen: set[str] = set()
    for event in events:
        if event.id <= version or event.field != "label" or event.object_id in seen:
            continue
        seen.add(event.object_id)
        if event.previous is None:
            then.pop(event.object_id, None)
        else:
            then[event.object_id] = event.previous
    return then


def changed(a: dict[str, str], b: dict[str, str]) -> int:
    """How many objects have a different label (or none) in ``a`` and ``b``."""
    return sum(1 for oid in a.keys() | b.keys() if a.get(oid) != b.get(oid))


def describe(state: ActiveState, rerank_key: str = "a") -> str:
    """``evidence · 20 labels (alice 15, bob 5) · stale: 3 labels since (a re-ranks) · base cca/fused/fisher``.

    Plain text: names of users and systems come from files and are not markup.
    """
    if state.problem:
        return f"active order: {state.problem}"
    record = state.record
    if record is None:
        return f"no record of what this order reflects (written by another version?): {rerank_key} re-ranks"
    total = _int(record.get("labels_total"))
    used = _int(record.get("labels"))
    users = _as_dict(record.get("users"))
    who = ", ".join(f"{user} {_int(n)}" for user, n in sorted(users.items(), key=lambda kv: (-_int(kv[1]), kv[0])))
    parts = [str(record.get("strategy") or "?"), f"{total} label{'s' if total != 1 else ''}" + (f" ({who})" if who else "")]
    if used != total:
        parts.append(f"{used} used")
    if state.stale:
        parts.append(f"stale: {state.stale} label{'s' if state.stale != 1 else ''} since ({rerank_key} re-ranks)")
    else:
        parts.append("up to date")
    if record.get("base"):  # after what matters most: an 80-column line wraps here
        parts.append(f"base {record['base']}")
    notes = record.get("notes")
    if isinstance(notes, list) and notes:
        parts.append("note: " + "; ".join(str(n) for n in notes))
    return " · ".join(parts)


def auto_due(state: ActiveState, tried: str | None) -> bool:
    """Re-rank by itself: auto mode is on, enough labels changed, and not already tried for these labels."""
    return state.problem is None and state.auto_every > 0 and state.stale >= state.auto_every and state.digest != tried


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
