from pathlib import Path

import pytest

from fmb_engine.config import load, template
from fmb_engine.config.loader import CLI_ORIGIN, DEFAULT_ORIGIN, read_layer_file
from fmb_engine.config.registry import SECTIONS
from fmb_engine.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_layers_override_in_order_and_record_their_origin(workspace, tmp_path):
    write(workspace.config_file, "mock:\n  objects: 300\n  seed: 7\n  image_size: 48\n")
    task = write(tmp_path / "task.yaml", "mock:\n  seed: 8\n  image_size: 40\n")
    resolved = load("mock", workspace, task, {"image_size": 32})
    values = resolved.values
    assert (values.objects, values.seed, values.image_size, values.anomaly_fraction) == (300, 8, 32, 0.02)
    assert resolved.sources["objects"] == str(workspace.config_file)
    assert resolved.sources["seed"] == str(task)
    assert resolved.sources["image_size"] == CLI_ORIGIN
    assert resolved.sources["anomaly_fraction"] == DEFAULT_ORIGIN


def test_unknown_key_names_file_key_and_closest_valid_key(tmp_path):
    task = write(tmp_path / "task.yaml", "mock:\n  objetcs: 10\n")
    with pytest.raises(ConfigError) as err:
        read_layer_file(task)
    message = str(err.value)
    assert str(task) in message and "mock.objetcs" in message
    assert "Did you mean 'objects'" in message and "anomaly_fraction" in message


def test_unknown_section_is_rejected_with_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section 'mokc'.*Did you mean 'mock'"):
        read_layer_file(write(tmp_path / "t.yaml", "mokc: {}\n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mock:\n  objects: many\n", r"mock.objects = 'many' is invalid.*expected int, got str"),
        ("mock:\n  objects: 5\n", r"mock.objects = 5 is invalid.*greater than or equal to 20"),
        ("mock:\n  compression: zip\n", r"mock.compression = 'zip' is invalid"),
        ("mock:\n  anomaly_fraction: 0.9\n", r"less than or equal to 0.5"),
    ],
)
def test_type_and_range_errors_name_the_layer_expected_and_got(tmp_path, text, expected):
    task = write(tmp_path / "t.yaml", text)
    with pytest.raises(ConfigError, match=expected) as err:
        load("mock", None, task)
    assert str(task) in str(err.value)


def test_yaml_scientific_notation_string_is_coerced():
    # PyYAML reads 1e-2 (no dot) as a string; the schema still gets a float.
    assert load("mock", cli={"anomaly_fraction": "1e-2"}).values.anomaly_fraction == pytest.approx(0.01)


def test_missing_and_malformed_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load("mock", None, tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load("mock", None, write(tmp_path / "bad.yaml", "mock: [unclosed\n"))
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load("mock", None, write(tmp_path / "list.yaml", "- 1\n- 2\n"))


def test_yaml_is_loaded_safely(tmp_path):
    evil = write(tmp_path / "evil.yaml", "mock: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load("mock", None, evil)


def test_templates_under_configs_match_the_schemas():
    root = Path(__file__).resolve().parents[2] / "configs"
    assert "embed.cca" in SECTIONS
    for name in SECTIONS:
        path = root / f"{name}.yaml"
        assert path.is_file(), f"configs/{name}.yaml is missing: run `fmb-engine config template {name}`"
        assert path.read_text() == template(name), f"configs/{name}.yaml is stale"
        assert load(name, None, path).values == SECTIONS[name]()  # a template is itself a valid config
