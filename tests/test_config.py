"""Configuration loading: overlays, overrides, and errors that name the key and the file."""

from __future__ import annotations

import pytest

from sales_st.config import ConfigError, load_config
from tests.conftest import CONF


def write(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return tmp_path


def test_overlay_and_override_order(tmp_path):
    write(tmp_path, "base.yaml", "features:\n  history: 56\n  horizon: 14\ntrain:\n  epochs: 8\n")
    write(tmp_path, "small.yaml", "features:\n  history: 28\n")
    cfg = load_config(tmp_path, "small", ["train.epochs=2", "features.spatial.k=3"])
    assert (cfg.features.history, cfg.features.horizon) == (28, 14)
    assert cfg.train.epochs == 2
    assert cfg.features.spatial.k == 3
    assert cfg.sources == [str(tmp_path / "base.yaml"), str(tmp_path / "small.yaml")]


def test_unknown_key_names_key_and_file(tmp_path):
    write(tmp_path, "base.yaml", "features:\n  history: 56\n")
    write(tmp_path, "bad.yaml", "features:\n  histroy: 28\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, "bad")
    msg = str(err.value)
    assert "features.histroy" in msg and "bad.yaml" in msg and "history" in msg


def test_wrong_type_names_key_and_file(tmp_path):
    write(tmp_path, "base.yaml", "train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"train\.epochs.*base\.yaml.*an integer.*'many'"):
        load_config(tmp_path)


def test_wrong_type_from_command_line(tmp_path):
    write(tmp_path, "base.yaml", "{}\n")
    with pytest.raises(ConfigError, match=r"model\.spatial.*command line.*true or false"):
        load_config(tmp_path, None, ["model.spatial=maybe"])


def test_missing_overlay_lists_available(tmp_path):
    write(tmp_path, "base.yaml", "{}\n")
    write(tmp_path, "local.yaml", "{}\n")
    with pytest.raises(ConfigError, match=r"overlay not found: .*nope\.yaml \(available: local\)"):
        load_config(tmp_path, "nope")


def test_missing_base_file(tmp_path):
    with pytest.raises(ConfigError, match="base.yaml"):
        load_config(tmp_path / "absent")


def test_literal_and_rule_values_checked(tmp_path):
    write(tmp_path, "base.yaml", "validation:\n  rules:\n    null_key: drop\n")
    with pytest.raises(ConfigError, match=r"validation\.rules\.null_key.*'fail', 'quarantine'"):
        load_config(tmp_path)
    write(tmp_path, "base.yaml", "validation:\n  rules:\n    no_such_rule: fail\n")
    with pytest.raises(ConfigError, match="unknown validation rule 'no_such_rule'"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "text, error",
    [
        ("model:\n  quantiles: [0.1, 0.9]\n", r"model\.quantiles.*including 0\.5"),
        ("model:\n  decoder_dropout: 1.0\n", r"model\.decoder_dropout.*in \[0, 1\)"),
        ("evaluate:\n  ensemble_scale: 1.0\n", r"evaluate\.ensemble_scale.*in \[0, 1\)"),
        ("evaluate:\n  ensemble_margin: -0.01\n", r"evaluate\.ensemble_margin.*0 or more"),
        ("evaluate:\n  lightgbm_rounds: 0\n", r"evaluate\.lightgbm_rounds.*at least 1"),
        (
            "evaluate:\n  lightgbm_interval_rounds: -1\n",
            r"evaluate\.lightgbm_interval_rounds.*0 \(lightgbm_rounds\) or more",
        ),
        (
            "features:\n  history: 28\nmodel:\n  sequence_days: 29\n",
            r"model\.sequence_days.*at most features\.history \(28\)",
        ),
        (
            "features:\n  history: 28\nmodel:\n  spatial_pass_days: 29\n",
            r"model\.spatial_pass_days.*at most features\.history \(28\)",
        ),
        (
            "model:\n  temporal: transformer\n  spatial_pass_days: 14\n",
            r"model\.spatial_pass_days.*model\.temporal: transformer",
        ),
        (
            "model:\n  spatial_pass: pooled\n  spatial_pass_days: 14\n",
            r"model\.spatial_pass_days.*model\.spatial_pass: pooled",
        ),
        (
            "features:\n  splits:\n    train_end: '2023-13-01'\n",
            r"features\.splits\.train_end.*YYYY-MM-DD",
        ),
        (
            "features:\n  splits:\n    train_end: 2023-13-01\n",
            r"base\.yaml: not valid YAML: month must be in 1\.\.12",
        ),
    ],
)
def test_semantic_checks(tmp_path, text, error):
    write(tmp_path, "base.yaml", text)
    with pytest.raises(ConfigError, match=error):
        load_config(tmp_path)


def test_split_boundaries_accept_dates_and_offsets(tmp_path):
    write(
        tmp_path, "base.yaml", "features:\n  splits:\n    train_end: 2015-05-08\n    val_end: 0\n"
    )
    cfg = load_config(tmp_path)
    assert cfg.features.splits.train_end == "2015-05-08"
    assert cfg.features.splits.val_end == 0


def test_mapping_override_merges(tmp_path):
    write(tmp_path, "base.yaml", "spark:\n  conf:\n    a.b: '1'\n    c.d: '2'\n")
    cfg = load_config(tmp_path, None, ['spark.conf={"c.d": "3", "e.f": "4"}'])
    assert cfg.spark.conf == {"a.b": "1", "c.d": "3", "e.f": "4"}


def test_project_overlays_load():
    for env in ("local", "cluster", "local,rossmann"):
        cfg = load_config(CONF, env)
        assert cfg.features.horizon >= 1
    ross = load_config(CONF, "local,rossmann")
    assert ross.data.source == "tables" and ross.features.horizon == 42


def test_fingerprint_tracks_sections(tmp_path):
    write(tmp_path, "base.yaml", "{}\n")
    a = load_config(tmp_path)
    b = load_config(tmp_path, None, ["train.epochs=1"])
    assert a.fingerprint("features") == b.fingerprint("features")
    assert a.fingerprint("train") != b.fingerprint("train")


def test_reference_in_conf_readme_is_current():
    """conf/README.md is generated from the dataclasses: the one source of defaults."""
    from sales_st.config.reference import render

    assert (CONF / "README.md").read_text() == render(), (
        "conf/README.md is stale: run python -m sales_st.config.reference > conf/README.md"
    )


def test_base_yaml_only_holds_what_differs_from_the_defaults():
    import yaml

    from sales_st.config import Config, to_dict

    defaults = to_dict(Config())

    def same(node, ref, key=""):
        for k, v in node.items():
            if isinstance(v, dict) and isinstance(ref.get(k), dict) and k != "conf":
                yield from same(v, ref[k], f"{key}{k}.")
            elif ref.get(k) == v:
                yield f"{key}{k}"

    base = yaml.safe_load((CONF / "base.yaml").read_text()) or {}
    assert list(same(base, defaults)) == []


def test_code_fingerprint_covers_modules_in_subpackages(tmp_path, monkeypatch):
    """Moving code into a subpackage must still invalidate stage outputs."""
    import importlib.resources as resources

    from sales_st.features import spec

    before = spec.code_fingerprint()
    root = tmp_path / "sales_st"
    import shutil

    shutil.copytree(resources.files("sales_st"), root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "features" / "windows.py").write_text(
        (root / "features" / "windows.py").read_text() + "\n# changed\n"
    )
    monkeypatch.setattr(resources, "files", lambda name: root)
    assert spec.code_fingerprint() != before
