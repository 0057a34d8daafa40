"""One option letter means one thing across the whole `fmb-engine` command tree."""

from __future__ import annotations

from collections import defaultdict

import typer

from fmb_engine.cli.main import app

#: Options every command that has them spells the same way, with this letter.
CORE = {"--survey": "-s", "--model": "-m", "--workspace": "-w", "--config": "-c", "--executor": "-x"}


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
        assert {s for s, _ in letters[long]} == {(short,)}, f"{long} should be {short} everywhere"
