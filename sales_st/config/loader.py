"""Loading the configuration: ``conf/base.yaml`` plus overlays plus ``key=value`` overrides,
merged, type-checked against :mod:`sales_st.config.sections` and validated once.

Every mistake names the key and the file it came from: an unknown key, a wrong type, a
missing overlay file, a value outside its allowed set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from sales_st.config.sections import RULES, Config, to_dict
from sales_st.errors import ConfigError

T = TypeVar("T")

# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def load_config(
    conf_dir: str | os.PathLike,
    envs: str | list[str] | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """Load ``base.yaml`` and overlay ``<env>.yaml`` for each env, then ``key=value`` overrides.

    >>> cfg = load_config("conf", "local", ["train.epochs=2"])
    """
    conf_dir = Path(conf_dir)
    base = conf_dir / "base.yaml"
    if not base.is_file():
        raise ConfigError(f"config file not found: {base}")
    if isinstance(envs, str):
        envs = [e for e in envs.split(",") if e]
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    sources = []
    for file in [base] + [conf_dir / f"{e}.yaml" for e in envs or []]:
        if not file.is_file():
            available = sorted(p.stem for p in conf_dir.glob("*.yaml") if p.stem != "base")
            raise ConfigError(
                f"config overlay not found: {file} (available: {', '.join(available)})"
            )
        raw = _read_yaml(file)
        _merge(merged, raw, origin, str(file), "")
        sources.append(str(file))
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        try:
            value = yaml.safe_load(text) if text else ""
        except (yaml.YAMLError, ValueError) as exc:
            raise ConfigError(
                f"override '{item}' on the command line: the value is not valid YAML "
                f"({str(exc).splitlines()[0]})"
            ) from None
        node = merged
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{p}' is not a section")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            # a mapping merges into a mapping: spark.conf={"spark.sql.x": "1"}
            node[parts[-1]] = {**node[parts[-1]], **value}
        else:
            node[parts[-1]] = value
        origin[key] = "command line"
    merged["root"] = str(conf_dir.resolve().parent)
    merged["sources"] = sources
    cfg = _build(Config, merged, "", origin)
    _check_semantics(cfg, origin)
    return cfg


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        with open(file) as fh:
            data = yaml.safe_load(fh) or {}
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: e.g. a date like 2023-13-01
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: top level must be a mapping, found {type(data).__name__}")
    return data


def _merge(dst: dict, src: dict, origin: dict, file: str, prefix: str) -> None:
    for key, value in src.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, origin, file, dotted + ".")
        else:
            dst[key] = value
        origin[dotted] = file


def _where(origin: dict, key: str) -> str:
    k = key
    while k:
        if k in origin:
            return origin[k]
        k = k.rpartition(".")[0]
    return "defaults"


def _build(cls: type, data: Any, prefix: str, origin: dict) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            f"'{prefix.rstrip('.') or '<root>'}' in {_where(origin, prefix.rstrip('.'))} "
            f"must be a mapping, found {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(
            f"unknown config key '{key}' in {_where(origin, key)} "
            f"(known keys here: {', '.join(sorted(names - {'root', 'sources'}))})"
        )
    kwargs = {}
    for name in names & set(data):
        kwargs[name] = _coerce(hints[name], data[name], f"{prefix}{name}", origin)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, origin: dict) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(
            f"config key '{key}' in {_where(origin, key)} must be {expected}, "
            f"found {value!r} ({type(value).__name__})"
        )

    o = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", origin)
    if o in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key, origin)
            except ConfigError as exc:
                errors.append(exc)
        raise bad(" or ".join(_type_name(a) for a in args))
    if o is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if o is list:
        if not isinstance(value, list):
            raise bad(f"a list of {_type_name(args[0])}")
        return [_coerce(args[0], v, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if o is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return {
            _coerce(args[0], k, f"{key}", origin): _coerce(args[1], v, f"{key}.{k}", origin)
            for k, v in value.items()
        }
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if tp is str:
        if isinstance(value, (dt.date,)):
            return value.isoformat()
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad("a string")
        return str(value)
    raise bad(_type_name(tp))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_semantics(cfg: Config, origin: dict) -> None:
    for rule in cfg.validation.rules:
        if rule not in RULES:
            key = f"validation.rules.{rule}"
            raise ConfigError(
                f"unknown validation rule '{rule}' in {_where(origin, key)} "
                f"(known: {', '.join(RULES)})"
            )
    f = cfg.features
    checks = [
        (f.history >= 7, "features.history", "at least 7"),
        (f.horizon >= 1, "features.horizon", "at least 1"),
        (f.stride >= 1, "features.stride", "at least 1"),
        (0 < f.min_history <= f.history, "features.min_history", "between 1 and features.history"),
        (f.matched_weeks >= 1, "features.matched_weeks", "at least 1"),
        (f.spatial.k >= 1, "features.spatial.k", "at least 1"),
        (cfg.train.ranks >= 1, "train.ranks", "at least 1"),
        (cfg.train.batch_size >= 1, "train.batch_size", "at least 1"),
        (0 < cfg.train.epoch_fraction <= 1, "train.epoch_fraction", "in (0, 1]"),
        (f.splits.train_stride >= 0, "features.splits.train_stride", "0 or more"),
        (
            all(0 < q < 1 for q in cfg.model.quantiles) and 0.5 in cfg.model.quantiles,
            "model.quantiles",
            "values in (0, 1) including 0.5",
        ),
        (cfg.model.units % max(cfg.model.heads, 1) == 0, "model.heads", "a divisor of model.units"),
        (
            0 < cfg.evaluate.ensemble_step <= 0.5
            and abs(round(1 / cfg.evaluate.ensemble_step) * cfg.evaluate.ensemble_step - 1) < 1e-9,
            "evaluate.ensemble_step",
            "1/n for a whole n >= 2 (0.05, 0.1, 0.25, ...)",
        ),
        (0 <= cfg.evaluate.ensemble_scale < 1, "evaluate.ensemble_scale", "in [0, 1)"),
        (cfg.evaluate.ensemble_margin >= 0, "evaluate.ensemble_margin", "0 or more"),
        (cfg.evaluate.selection_max_rows >= 1, "evaluate.selection_max_rows", "at least 1"),
        (cfg.evaluate.lightgbm_rounds >= 1, "evaluate.lightgbm_rounds", "at least 1"),
        (
            cfg.evaluate.lightgbm_interval_rounds >= 0,
            "evaluate.lightgbm_interval_rounds",
            "0 (lightgbm_rounds) or more",
        ),
        (
            0 < cfg.evaluate.lightgbm_learning_rate <= 1,
            "evaluate.lightgbm_learning_rate",
            "in (0, 1]",
        ),
        (cfg.model.log_offset > 0, "model.log_offset", "above 0"),
        (cfg.model.members >= 1, "model.members", "at least 1"),
        (
            0 <= cfg.model.sequence_days <= cfg.features.history,
            "model.sequence_days",
            f"0 (all) or at most features.history ({cfg.features.history})",
        ),
        (
            0 <= cfg.model.spatial_pass_days <= cfg.features.history,
            "model.spatial_pass_days",
            f"0 (as the first pass) or at most features.history ({cfg.features.history})",
        ),
        (
            cfg.model.temporal == "lstm"
            or cfg.model.spatial_pass_days == 0
            or cfg.model.spatial_pass_days >= (cfg.model.sequence_days or cfg.features.history),
            "model.spatial_pass_days",
            "0 with model.temporal: transformer (its position table has one length)",
        ),
        (
            cfg.model.spatial_pass == "sequence" or cfg.model.spatial_pass_days == 0,
            "model.spatial_pass_days",
            "0 with model.spatial_pass: pooled (there is no second pass to shorten)",
        ),
        (
            cfg.model.numeric_embedding_frequencies >= 1,
            "model.numeric_embedding_frequencies",
            "at least 1",
        ),
        (cfg.model.numeric_embedding_sigma > 0, "model.numeric_embedding_sigma", "above 0"),
        (cfg.model.numeric_embedding_dim >= 1, "model.numeric_embedding_dim", "at least 1"),
        (0 <= cfg.model.dropout < 1, "model.dropout", "in [0, 1)"),
        (0 <= cfg.model.decoder_dropout < 1, "model.decoder_dropout", "in [0, 1)"),
        (
            all(0 < v < 1 for v in cfg.replenish.simulate_levels),
            "replenish.simulate_levels",
            "service levels in (0, 1)",
        ),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise ConfigError(f"config key '{key}' in {_where(origin, key)} must be {expected}")
    dates = {
        "features.splits.train_end": f.splits.train_end,
        "features.splits.val_end": f.splits.val_end,
        "data.run_date": cfg.data.run_date,
        "data.generator.start_date": cfg.data.generator.start_date,
        "validation.start_date": cfg.validation.start_date,
        "validation.end_date": cfg.validation.end_date,
    }
    for dotted, value in dates.items():
        if isinstance(value, str):
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                raise ConfigError(
                    f"config key '{dotted}' in {_where(origin, dotted)} must be a date "
                    f"(YYYY-MM-DD){' or an offset in days' if 'splits' in dotted else ''}, "
                    f"found {value!r}"
                ) from None
    for event in f.event_distances:
        if not event.isidentifier():
            key = "features.event_distances"
            raise ConfigError(
                f"config key '{key}' in {_where(origin, key)}: event {event!r} "
                "must be a name (letters, digits, _)"
            )
    from sales_st.features import names as N

    for i, flag in enumerate(f.matched_means):
        key = "features.matched_means"
        if flag not in N.MATCHED_FLAGS or flag in f.matched_means[:i]:
            why = (
                "is named twice"
                if flag in N.MATCHED_FLAGS
                else f"is not one of {', '.join(N.MATCHED_FLAGS)} "
                "(the day flags a same-weekday mean can match)"
            )
            raise ConfigError(f"config key '{key}' in {_where(origin, key)}: {flag!r} {why}")
    taken = (
        set(N.FUTURE)
        | set(N.event_channels(f.event_distances))
        | {N.matched_mean(flag) for flag in f.matched_means}
    )
    for name in f.future_expressions:
        if name in taken:
            key = f"features.future_expressions.{name}"
            raise ConfigError(
                f"config key '{key}' in {_where(origin, key)}: '{name}' is already "
                "a known-future channel; choose another name"
            )
        if not (name.startswith("fut_") and name.isidentifier()):
            key = f"features.future_expressions.{name}"
            raise ConfigError(
                f"config key '{key}' in {_where(origin, key)}: a channel name "
                "must start with fut_ and be a name (letters, digits, _)"
            )
    _check_item_hierarchy(cfg, origin)
    _check_mappings(cfg, origin)
    _check_tune(cfg, origin)


# Items-table columns that cannot be a level of the product hierarchy: the key, and the
# numeric attribute.
NOT_ITEM_LEVELS = ("item_id", "base_price")


def _check_item_hierarchy(cfg: Config, origin: dict) -> None:
    """Each level of ``data.item_hierarchy`` names its own items column: a name (it becomes
    part of feature and metric names), not the item key, not a store column of
    ``data.hierarchy`` (the two are joined on one table), not a level twice."""
    key = "data.item_hierarchy"
    seen: set[str] = set()
    store_side = set(cfg.data.region_columns) | {"store_id"}
    for lvl in cfg.data.item_hierarchy:
        col = lvl.column
        problem = ""
        if not col.isidentifier():
            problem = "must be a name (letters, digits, _)"
        elif col in NOT_ITEM_LEVELS:
            problem = "is the item key or a numeric attribute, not a level"
        elif col in store_side:
            problem = "is also a store column (data.hierarchy); rename one of them"
        elif col in seen:
            problem = "is named twice"
        if problem:
            raise ConfigError(
                f"config key '{key}' in {_where(origin, key)}: column {col!r} (level "
                f"{lvl.name!r}) {problem}"
            )
        seen.add(col)


def _check_mappings(cfg: Config, origin: dict) -> None:
    """Every mapped column of a tables-source dataset must be a column of the contract (or a
    configured store or item hierarchy column, or a ``static_num_``/``static_cat_``
    attribute)."""
    from sales_st.data.contract import TABLES, extra_static_columns

    for name, table in TABLES.items():
        src = getattr(cfg.data, name)
        allowed = set(table.names)
        if name == "stores":
            allowed |= set(cfg.data.region_columns)
        if name == "items":
            allowed |= set(cfg.data.item_columns)
        for part in ("columns", "constants", "values"):
            mapping = getattr(src, part)
            for col in mapping:
                ok = col in allowed or (
                    name in ("stores", "items") and bool(extra_static_columns([col]))
                )
                if not ok:
                    key = f"data.{name}.{part}.{col}"
                    raise ConfigError(
                        f"config key '{key}' in {_where(origin, key)}: '{col}' is not a column "
                        f"of the {name} contract (columns: {', '.join(table.names)}"
                        + (", static_num_*, static_cat_*" if name in ("stores", "items") else "")
                        + ")"
                    )


# Sections a tuning trial may change: it trains on the features already built.
TUNABLE = ("model", "train")


def _field_type(key: str) -> Any:
    """The declared type of the setting at dotted ``key``; None when there is no such setting
    (or it is a whole section)."""
    tp: Any = Config
    for part in key.split("."):
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            return None
        if part not in {f.name for f in dataclasses.fields(tp)}:
            return None
        tp = typing.get_type_hints(tp)[part]
    return None if isinstance(tp, type) and dataclasses.is_dataclass(tp) else tp


def _bounds_problem(kind: str, low: float, high: float, log: bool) -> str:
    """What is wrong with a numeric search dimension's bounds ("" when nothing)."""
    if low > high:
        return "low above high"
    if log and low <= 0:
        return "log scale with low <= 0"
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        return "int bounds that are not whole numbers"
    return ""


def _check_tune(cfg: Config, origin: dict) -> None:
    """``tune``: a positive trial count, and a search space whose keys are model.* or train.*
    settings and whose bounds or choices are values those settings accept."""
    t = cfg.tune
    checks = [
        (t.trials >= 1, "tune.trials", "at least 1"),
        (t.startup_trials >= 0, "tune.startup_trials", "0 or more"),
        (t.prune_startup_trials >= 0, "tune.prune_startup_trials", "0 or more"),
        (t.prune_warmup_epochs >= 0, "tune.prune_warmup_epochs", "0 or more"),
        (bool(t.space), "tune.space", "a mapping of at least one setting"),
        (bool(t.study), "tune.study", "a name"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise ConfigError(f"config key '{key}' in {_where(origin, key)} must be {expected}")
    for name, p in t.space.items():
        key = f"tune.space.{name}"
        where = _where(origin, key)
        tp = _field_type(name)
        if tp is None or name.split(".")[0] not in TUNABLE:
            raise ConfigError(
                f"config key '{key}' in {where}: '{name}' is not a setting a trial can change "
                f"(a dotted key of {' or '.join(s + '.*' for s in TUNABLE)}, e.g. model.units)"
            )
        if p.type == "categorical":
            if not p.choices:
                raise ConfigError(f"config key '{key}' in {where}: a categorical needs choices")
            values = list(p.choices)
        else:
            bad = _bounds_problem(p.type, p.low, p.high, p.log)
            if bad:
                raise ConfigError(f"config key '{key}' in {where}: {bad} ({p.low}, {p.high})")
            values = [int(p.low), int(p.high)] if p.type == "int" else [p.low, p.high]
        for value in values:
            _coerce(tp, value, name, {name: f"{key} in {where}"})


def with_overrides(cfg: Config, values: dict[str, Any], source: str = "overrides") -> Config:
    """``cfg`` with the settings at dotted keys replaced (e.g. a tuning trial's parameters),
    type-checked and validated like a loaded config; an error names the key and ``source``.

    >>> with_overrides(cfg, {"model.units": 32, "train.learning_rate": 0.001})
    """
    data = to_dict(cfg)
    origin = {}
    for key, value in values.items():
        if _field_type(key) is None:
            raise ConfigError(f"unknown config key '{key}' in {source}")
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
        origin[key] = source
    try:
        new = _build(Config, data, "", origin)
        _check_semantics(new, origin)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return new


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config section from its ``to_dict`` form (e.g. a plan sent to the ranks),
    with the same type checks as the loader."""
    return _build(cls, data, "", {})
