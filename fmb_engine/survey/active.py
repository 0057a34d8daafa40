"""Which survey a workspace works on, and what was made from it.

One rule for every command and the TUI: the active survey is ``general.survey``
resolved like any config value (default < ``fmb.yaml`` < ``--config`` <
``--survey``). ``data mock`` and ``data import`` record the survey they wrote in
``fmb.yaml`` (:func:`record_active`), so after an import every later stage
works on it without a flag. A configured survey whose file does not exist is an
error naming the file, the surveys present and how to choose; nothing falls back
to another file silently.

Replacing a survey that embeddings were made from makes them (and the scores and
analyses built on them) stale: :func:`check_replace` lists those files and asks
for ``--force``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from fmb_engine.errors import DataError, WorkspaceError
from fmb_engine.workspace import Workspace, atomic_write_text


def survey_name(ws: Workspace, path: Path) -> str:
    """What to record for ``path``: the bare name for ``survey/<name>.h5``, else the absolute path."""
    path = Path(path).resolve()
    if path.parent == ws.folder("survey").resolve() and path.suffix == ".h5":
        return path.stem
    return str(path)


def resolve_survey(ws: Workspace, name: str, origin: str = "general.survey") -> Path:
    """The file of survey ``name``; WorkspaceError saying what exists and how to choose when it is missing."""
    path = ws.survey_path(name)
    if path.is_file():
        return path
    found = ", ".join(p.stem for p in ws.surveys()) or "none"
    raise WorkspaceError(
        f"survey file not found: {path} (survey {name!r}, {origin}). Surveys in {ws.folder('survey')}: {found}. "
        "Choose one with --survey NAME (or set general.survey in fmb.yaml), or create it with "
        "`fmb-engine data mock --name NAME` / `fmb-engine data import SOURCE --name NAME`."
    )


_GENERAL = re.compile(r"^general:[ \t]*(#.*)?$", re.MULTILINE)
_SURVEY_LINE = re.compile(r"^([ \t]+)survey:[^\n]*$", re.MULTILINE)


def record_active(ws: Workspace, path: Path) -> str:
    """Make ``path`` the workspace's active survey: ``general.survey`` in ``fmb.yaml``.

    The file is edited in place so the user's comments and other sections stay;
    the result is checked by reading it back (safe_load) and written atomically.
    Returns the recorded value.
    """
    value = survey_name(ws, path)
    text = ws.config_file.read_text(encoding="utf-8") if ws.config_file.is_file() else ""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise WorkspaceError(f"{ws.config_file}: expected a mapping of sections, cannot record general.survey")
    quoted = json.dumps(value)  # a JSON string is a valid YAML scalar
    header = _GENERAL.search(text)
    if header is None:
        new = text + ("" if text.endswith("\n") or not text else "\n") + f"general:\n  survey: {quoted}\n"
    else:
        body_start = header.end()
        nxt = re.search(r"^\S", text[body_start + 1 :], re.MULTILINE)
        body_end = body_start + 1 + nxt.start() if nxt else len(text)
        body = text[body_start:body_end]
        line = _SURVEY_LINE.search(body)
        if line:
            body = body[: line.start()] + f"{line.group(1)}survey: {quoted}" + body[line.end() :]
        else:
            body = f"\n  survey: {quoted}" + body
        new = text[:body_start] + body + text[body_end:]
    check = yaml.safe_load(new) or {}
    if not isinstance(check.get("general"), dict) or check["general"].get("survey") != value:
        # unusual layout (flow style, anchors): rewrite the data instead of the text
        data.setdefault("general", {})
        if not isinstance(data["general"], dict):
            raise WorkspaceError(f"{ws.config_file}: 'general' is not a mapping, cannot record general.survey")
        data["general"]["survey"] = value
        new = yaml.safe_dump(data, sort_keys=False)
    atomic_write_text(ws.config_file, new)
    return value


def dependents(ws: Workspace, survey: Path) -> list[Path]:
    """Files made from ``survey``: its embedding runs (and their shards), then the scores and analyses
    built on embeddings (they are stale as soon as one embedding run is)."""
    from fmb_engine.embed.store import EmbeddingReader
    from fmb_engine.survey.store import SurveyReader

    survey = Path(survey).resolve()
    if not survey.is_file():
        return []
    with SurveyReader(survey) as reader:
        digest = reader.digest
    made: list[Path] = []
    emb = ws.folder("embeddings")
    for path in sorted(emb.glob("*.h5")):
        try:
            with EmbeddingReader(path) as r:
                meta = r.meta
        except (DataError, OSError):
            continue
        if meta.survey_digest == digest or Path(meta.survey_path).resolve() == survey:
            made.append(path)
    for info in sorted(emb.glob("*.shards/run.json")):
        try:
            run = json.loads(info.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if run.get("survey_digest") == digest or Path(str(run.get("survey", ""))).resolve() == survey:
            made.append(info.parent)
    if made:
        for folder in ("scores", "analysis"):
            made.extend(sorted(p for p in ws.folder(folder).rglob("*") if p.is_file()))
    return made


def check_replace(ws: Workspace, survey: Path, force: bool, same: bool = False) -> list[Path]:
    """Before (re)writing ``survey``: the files that become stale; DataError without ``force``.

    ``same`` says the new survey is known to equal the present one (same generator and
    parameters): nothing becomes stale.
    """
    if same:
        return []
    stale = dependents(ws, survey)
    if stale and not force:
        shown = "\n  ".join(str(p.relative_to(ws.root)) if p.is_relative_to(ws.root) else str(p) for p in stale[:20])
        more = f"\n  ... and {len(stale) - 20} more" if len(stale) > 20 else ""
        raise DataError(
            f"{survey} already exists and later stages were made from it; replacing it makes these stale:\n  "
            f"{shown}{more}\nNothing was changed. Pass --force to replace it (then rerun embed/detect), "
            "or write the new survey under another --name."
        )
    return stale
