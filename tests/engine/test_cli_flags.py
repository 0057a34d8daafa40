"""One option letter means one thing across the whole `fmb-engine` command tree."""

from __future__ import annotations

from collections import defaultdict

import typer

from fmb_engine.cli.main import app

#: One name per concept, and the short letter each has everywhere (None: no short letter anywhere).
#: ``--format`` has none: ``-f`` is ``jobs logs --follow``'s, as in ``tail -f``.
CORE = {"--survey": "-s", "--model": "-m", "--workspace": "-w", "--config": "-c", "--executor": "-x",
        "--system": None, "--format": None}


def _options():
    """(command path, long name, short names) of every option of every command."""
    found = []

    def walk(cmd, path):
        for param in cmd.params:
            if getattr(param, "param_type_name", "") != "option":
                continue
            names = [*param.opts, *param.secondary_opts]
            longs = [n for n in names if n.startswith("--")]
            shorts = [n for n in names if not n.startswith("--")]
            found.append((path, longs[0] if longs else param.name, shorts))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "fmb-engine")
    return found


def test_the_tree_is_walked():
    paths = {path for path, _, _ in _options()}
    assert {"fmb-engine data show", "fmb-engine figures outlier-grid", "fmb-engine embed pca",
            "fmb-engine jobs logs", "fmb-engine evaluate"} <= paths


def test_each_short_flag_has_one_long_name_everywhere():
    meaning = defaultdict(set)
    for path, long, shorts in _options():
        for short in shorts:
            meaning[short].add((long, path))
    clashes = {s: sorted(uses) for s, uses in meaning.items() if len({long for long, _ in uses}) > 1}
    assert not clashes, f"short flags with more than one meaning: {clashes}"


def test_each_long_name_has_one_short_flag_everywhere():
    letters = defaultdict(set)
    for path, long, shorts in _options():
        letters[long].add((tuple(shorts), path))
    mixed = {long: sorted(uses) for long, uses in letters.items()
             if long in CORE and len({s for s, _ in uses}) > 1}
    assert not mixed, f"options spelled with different short flags in different commands: {mixed}"
    for long, short in CORE.items():
        assert letters[long], f"no command has {long}"
        expected = (short,) if short else ()
        assert {s for s, _ in letters[long]} == {expected}, f"{long} should be {short or 'without a short flag'} everywhere"


def test_each_concept_has_one_name():
    """A second spelling of a concept (``--models``, ``--surveys``, ``--out`` beside ``--output``) is refused:
    scripts and completion learn one name."""
    names = {long for _, long, _ in _options()}
    variants = {long: sorted(n for n in names if n != long and n.rstrip("s") == long.rstrip("s"))
                for long in [*CORE, "--output"]}
    assert not {k: v for k, v in variants.items() if v}, variants


def test_every_listing_takes_format():
    """Every command that prints a table or a summary takes --format table|json|csv (docs/cli.md)."""
    listings = {"jobs list", "jobs show", "jobs executors", "data info", "data show", "models list", "models check",
                "triage summary", "evaluate", "analyze rankings", "analyze regression", "analyze neighbor-ranks",
                "config show", "demo"}
    with_format = {path.removeprefix("fmb-engine ") for path, long, _ in _options() if long == "--format"}
    assert listings <= with_format, sorted(listings - with_format)
