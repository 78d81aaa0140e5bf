"""Network ablations on a stored example table, trained in one process: minutes, not a pipeline.

    .venv/bin/python bench/bench_network.py --env local,rossmann \\
        --variant base= --variant no_store_emb=drop_cat=store_id_idx \\
        --variant decoder_dropout=model.decoder_dropout=0.2

Reads the feature job's current example table (``paths.features``, as the training job does),
holds the train / val / test splits in memory, and for each variant builds the model of
``model.*`` (config plus the variant's overrides), trains it with the training job's loss,
optimiser, early stopping and learning-rate decay -- but in this process, without Horovod or
Petastorm, at the effective batch and learning rate of ``train.ranks`` ranks -- and scores the
validation and test windows' medians.  Metrics are over the rows of ``evaluate.metric_filter``
(evaluated by DuckDB on ``observed``, ``open``, ``actual``), as the evaluation job counts them.

A variant is ``name=key=value,key=value`` with config keys (``model.units=32``,
``train.learning_rate=0.0005``) and the harness's own: ``drop_cat=<column>`` (that categorical
input set to the unknown index for every window: the model loses it), ``zero=<input>+<input>``
(model inputs set to 0, e.g. ``hist+nbr_y+ctx_seq``: no history reaches the encoders),
``seed=<n>``, ``lightgbm=1`` (not a network: the evaluation job's LightGBM baseline, its
settings and row sample, trained on the same windows -- the reference to read the others
against), ``refit=<epochs>`` (after early stopping, continue on the training and
validation windows together at ``refit_lr`` (0.25) times the learning rate; scored again),
``recent=<epochs>+<epochs>...`` (from the kept weights, continue on the validation windows and
the newest ``recent_origins`` training origins only, at ``recent_lr`` (0.25) times the rate,
once per epoch count; scored on the test windows), ``uplift=<flag>+<flag>...`` (for each
history flag, e.g. ``hist_promo``, the window's log sales ratio on flagged days against
other days of the same weekday in its history, ``history_uplift``, added to the numeric
inputs of the network, or of LightGBM with ``lightgbm=1``).
Variants of one run share the data and differ only in what they name, so their numbers can
be compared; the pipeline's figures (``bench_accuracy.py``) add the distributed input path,
the ensemble and the calibration on top.

Figures: ``bench/results/<--name>.json`` (default ``network_<database>``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import time
from typing import Any

import numpy as np
import pandas as pd
from common import ROOT, table, write_results

from sales_st.config import load_config
from sales_st.features.spec import read_spec


def load_split(spec, split: str, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The model's columns of a split's windows, with their origin and the ``keys`` columns
    (store_id, state, ...) as they are."""
    import pyarrow.parquet as pq

    from sales_st.model.tensors import columns_from_pandas

    names = list(dict.fromkeys(spec.layout.all_columns() + ["scale", "fut_open"]))
    files = sorted(glob.glob(f"{spec.split_path(split)}/*.parquet"))
    tables = [pq.read_table(f, columns=[*names, "origin", *keys]) for f in files]
    pdf = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    cols = columns_from_pandas(pdf, names)
    cols["origin"] = pdf["origin"].to_numpy().astype("datetime64[D]")
    for key in keys:
        cols[key] = pdf[key].to_numpy()
    return cols


def metric_mask(cols: dict[str, np.ndarray], actual: np.ndarray, predicate: str) -> np.ndarray:
    """``evaluate.metric_filter`` over (observed, open, actual) of every window and day."""
    import duckdb

    frame = pd.DataFrame(
        {
            "observed": cols["y_mask"].reshape(-1).astype("int32"),
            "open": cols["fut_open"].reshape(-1).astype("int32"),
            "actual": actual.reshape(-1),
        }
    )
    con = duckdb.connect()
    con.register("rows", frame)
    keep = con.execute(f"SELECT ({predicate}) AS k FROM rows").fetchnumpy()["k"]
    return np.asarray(keep, dtype=bool).reshape(actual.shape)


def parse_variant(text: str) -> tuple[str, list[str], dict[str, str]]:
    """``name=key=value,...`` -> (name, config overrides, the bench's own options)."""
    name, _, rest = text.partition("=")
    config_keys, own = [], {}
    for item in filter(None, re.split(r",(?![^\[]*\])", rest)):  # "k=[1,2]" stays whole
        key, _, value = item.partition("=")
        if key in (
            "drop_cat",
            "zero",
            "seed",
            "refit",
            "refit_lr",
            "lightgbm",
            "recent",
            "recent_lr",
            "recent_origins",
            "uplift",
        ):
            own[key] = value
        else:
            config_keys.append(f"{key}={value}")
    return name, config_keys, own


def network_predict(full):
    return lambda x: full.predict(x, batch_size=2048, verbose=0)["quantiles"]


def history_uplift(cols: dict[str, np.ndarray], flag: str) -> np.ndarray:
    """Per window, the log ratio of the mean target on ``flag`` days to the mean on other
    days of the same weekday, over the history (open, observed days with sales), averaged
    over the weekdays that have both; NaN where none has."""
    y, dow = cols["hist_y"], cols["hist_dow"]
    ok = (cols["hist_observed"] > 0) & (cols["hist_open"] > 0) & (y > 0)
    on = cols[flag] > 0
    total = np.zeros(len(y))
    count = np.zeros(len(y))
    with np.errstate(invalid="ignore", divide="ignore"):
        for d in np.unique(dow):
            at = ok & (dow == d)
            a, b = at & on, at & ~on
            na, nb = a.sum(1), b.sum(1)
            both = (na > 0) & (nb > 0)
            ratio = np.log((y * a).sum(1) / np.maximum(na, 1)) - np.log(
                (y * b).sum(1) / np.maximum(nb, 1)
            )
            total += np.where(both, ratio, 0.0)
            count += both
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def with_uplift(spec, data, flags: str):
    """The spec and splits with ``x_uplift_<flag>`` (``history_uplift``) as window scalars for
    each history flag of ``uplift=hist_promo+...``: the model's and LightGBM's numeric inputs,
    standardised with the training split's mean and std."""
    import dataclasses

    lay, scalers, out = spec.layout, dict(spec.scalers), {s: dict(d) for s, d in data.items()}
    names = []
    for flag in flags.split("+"):
        name = f"x_uplift_{flag}"
        for split in out:
            out[split][name] = history_uplift(data[split], flag)
        v = out["train"][name]
        scalers[name] = (float(np.nanmean(v)), float(np.nanstd(v)) or 1.0)
        names.append(name)
        print(
            f"{name}: train mean {scalers[name][0]:.4f}, std {scalers[name][1]:.4f}, "
            f"missing {np.isnan(v).mean():.3f}",
            flush=True,
        )
    layout = dataclasses.replace(lay, scalars=lay.scalars + names)
    return spec.replace(layout=layout, scalers=scalers), out


def run_variant(cfg, spec, data, own: dict[str, str], save: str = "") -> dict[str, Any]:
    if "lightgbm" in own:
        return run_lightgbm(cfg, spec, data, own, save)
    import tensorflow as tf
    from tensorflow import keras

    from sales_st.model.network import build_model, model_loss, training_output
    from sales_st.model.tensors import model_inputs_from_columns, targets_from_columns
    from sales_st.training.callbacks import BestWeights, average_decay

    mcfg, tcfg = cfg.model, cfg.train
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(int(own.get("seed", tcfg.seed)))
    arrays = {}
    for split, cols in data.items():
        x = {k: v.numpy() for k, v in model_inputs_from_columns(cols, spec).items()}
        if "drop_cat" in own:
            x["cat"][:, spec.layout.categorical.index(own["drop_cat"])] = 0
        for name in filter(None, own.get("zero", "").split("+")):
            x[name] = np.zeros_like(x[name])
        arrays[split] = (x, targets_from_columns(cols).numpy())
    full = build_model(spec, mcfg)
    model = keras.Model(full.input, full.output[training_output(mcfg)])
    lr = tcfg.learning_rate * tcfg.ranks
    model.compile(optimizer=keras.optimizers.legacy.Adam(lr), loss=model_loss(mcfg))
    batch = tcfg.batch_size * tcfg.ranks
    steps_per_epoch = -(-len(arrays["train"][1]) // batch)
    best = BestWeights(model, average_decay(tcfg.weight_average, steps_per_epoch))
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=tcfg.patience), best]
    if tcfg.lr_decay_patience:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=tcfg.lr_decay_patience, min_lr=lr / 32
            )
        )
    start = time.time()
    hist = model.fit(
        *arrays["train"],
        validation_data=arrays["val"],
        epochs=tcfg.epochs,
        batch_size=batch,
        verbose=2,
        callbacks=callbacks,
    )
    out: dict[str, Any] = {
        "train_s": round(time.time() - start),
        "epochs": len(hist.history["val_loss"]),
        "best_epoch": best.best_epoch,
        "val_loss": round(min(hist.history["val_loss"]), 5),
        **scores(network_predict(full), arrays, data, cfg, save),
    }
    if "refit" in own:
        # then continue on the training and validation windows together (the newest origins
        # included) at a fraction of the learning rate; its validation figures are no longer
        # out of sample
        x_all = {k: np.concatenate([v, arrays["val"][0][k]]) for k, v in arrays["train"][0].items()}
        y_all = np.concatenate([arrays["train"][1], arrays["val"][1]])
        keras.backend.set_value(
            model.optimizer.learning_rate, lr * float(own.get("refit_lr", 0.25))
        )
        model.fit(
            x_all,
            y_all,
            epochs=int(own["refit"]),
            batch_size=tcfg.batch_size * tcfg.ranks,
            verbose=2,
        )
        refit = scores(network_predict(full), arrays, data, cfg, save + "_refit" if save else "")
        out.update({f"refit_{k}": v for k, v in refit.items()})
    if "recent" in own:
        out.update(fine_tune_recent(model, full, arrays, data, cfg, own, lr, save))
    return out


def fine_tune_recent(model, full, arrays, data, cfg, own, lr, save) -> dict[str, Any]:
    """From the kept weights, continue on the newest windows only: the validation windows and
    the last ``recent_origins`` training origins (each count of ``a+b``; 0: none), for each
    epoch count of ``recent=a+b+...`` (each from the kept weights again, with a fresh Adam at
    ``recent_lr`` times the rate).  Scored on the test windows; the validation figures would
    no longer be out of sample."""
    from tensorflow import keras

    from sales_st.model.network import model_loss

    mcfg, tcfg = cfg.model, cfg.train
    origins = np.unique(data["train"]["origin"])
    kept = model.get_weights()
    rate = lr * float(own.get("recent_lr", 0.25))
    out: dict[str, Any] = {}
    x_tr, y_tr = arrays["train"]
    runs = [
        (int(n), int(e))
        for n in own.get("recent_origins", "0").split("+")
        for e in own["recent"].split("+")
    ]
    for n_old, epochs in runs:
        keep = np.isin(data["train"]["origin"], origins[len(origins) - n_old :] if n_old else [])
        x_new = {k: np.concatenate([v[keep], arrays["val"][0][k]]) for k, v in x_tr.items()}
        y_new = np.concatenate([y_tr[keep], arrays["val"][1]])
        tag = f"recent{epochs}_o{n_old}"
        model.set_weights(kept)
        model.compile(
            optimizer=keras.optimizers.legacy.Adam(rate),
            loss=model_loss(mcfg),
        )
        t0 = time.time()
        model.fit(x_new, y_new, epochs=epochs, batch_size=tcfg.batch_size * tcfg.ranks, verbose=0)
        got = scores(network_predict(full), arrays, data, cfg, f"{save}_{tag}" if save else "")
        out[f"{tag}_windows"] = len(y_new)
        out.update({f"{tag}_{k}": v for k, v in got.items() if k.startswith("test")})
        out[f"{tag}_s"] = round(time.time() - t0)
        print(
            f"{tag}: windows {len(y_new)}, test {got['test_rmspe']} / {got['test_wape']}",
            flush=True,
        )
    model.set_weights(kept)
    return out


def lightgbm_frame(cols: dict[str, np.ndarray], spec) -> pd.DataFrame:
    """Example columns as the evaluation job's LightGBM rows (``baselines.lgbm_features``),
    one per window and horizon day, with the same raw values: the window's static numbers
    and categories, the day's known-future channels and weekday, and the horizon."""
    from sales_st.evaluation.baselines import lgbm_features
    from sales_st.features import names as N

    lay = spec.layout
    n, h = cols[N.FUT_DOW].shape
    frame = pd.DataFrame(
        {
            **{c: np.repeat(cols[c], h) for c in lay.numeric + lay.categorical},
            **{c: cols[c].reshape(n * h) for c in lay.fut + [N.FUT_DOW]},
            "horizon": np.tile(np.arange(1, h + 1), n),
        }
    )
    feats, cats = lgbm_features(spec)
    return frame[feats].astype(dict.fromkeys(cats, "int32"))


def run_lightgbm(cfg, spec, data, own: dict[str, str], save: str = "") -> dict[str, Any]:
    """The evaluation job's LightGBM baseline (its settings, row sample and features) on the
    same windows: the reference the network variants are read against."""
    import lightgbm as lgb

    from sales_st.evaluation.baselines import (
        booster_params,
        lgbm_features,
        point_weights,
        quantile_rounds,
    )
    from sales_st.model.tensors import targets_from_columns

    seed = int(own.get("seed", cfg.train.seed))
    # the "inputs" of a split are its example columns: LightGBM reads them raw
    arrays = {s: (cols, targets_from_columns(cols).numpy()) for s, cols in data.items()}
    rows = lightgbm_frame(data["train"], spec)
    target = arrays["train"][1][..., 0].reshape(-1)
    # as the evaluation job: every observed day, closed ones included (fut_open is a feature)
    keep = np.flatnonzero(data["train"]["y_mask"].reshape(-1) > 0)
    ev = cfg.evaluate
    if len(keep) > ev.lightgbm_max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(keep, ev.lightgbm_max_rows, False))
    _, cats = lgbm_features(spec)
    start = time.time()
    boosters = {}
    for q in sorted(cfg.model.quantiles):
        w = point_weights(q, ev.lightgbm_point_loss, target[keep])
        ds = lgb.Dataset(rows.iloc[keep], label=target[keep], weight=w, categorical_feature=cats)
        params = booster_params(
            q, ev.lightgbm_leaves, seed, ev.lightgbm_learning_rate, ev.lightgbm_point_loss
        )
        rounds = quantile_rounds(q, ev.lightgbm_rounds, ev.lightgbm_interval_rounds)
        boosters[q] = lgb.train(params, ds, num_boost_round=rounds)
    train_s = round(time.time() - start)

    def predict(cols: dict[str, np.ndarray]) -> np.ndarray:
        frame = lightgbm_frame(cols, spec)
        n, h = cols["y"].shape
        q = np.stack([boosters[q].predict(frame).reshape(n, h) for q in sorted(boosters)], -1)
        return np.sort(q, axis=-1)  # as the evaluation job reads them: never crossing

    return {"train_s": train_s, "rows": len(keep), **scores(predict, arrays, data, cfg, save)}


def rmspe_wape(actual: np.ndarray, median: np.ndarray) -> tuple[float, float]:
    """RMSPE and WAPE of a median forecast over the rows kept (actuals nonzero)."""
    rmspe = float(np.sqrt(np.mean(((actual - median) / actual) ** 2)))
    return rmspe, float(np.abs(actual - median).sum() / np.abs(actual).sum())


def scores(predict, arrays, data, cfg, save: str) -> dict[str, float]:
    """RMSPE, WAPE of the median and p_lo..p_hi coverage on the validation and test windows;
    ``predict`` maps model inputs to quantiles [N, H, Q] in scaled units."""
    out = {}
    qs = sorted(cfg.model.quantiles)
    for split in ("val", "test"):
        x, y = arrays[split]
        scale = data[split]["scale"][:, None]
        q = predict(x) * scale[..., None]
        actual = y[..., 0] * scale
        keep = metric_mask(data[split], actual, cfg.evaluate.metric_filter) & (actual != 0)
        med, lo, hi, act = (
            q[..., qs.index(0.5)][keep],
            q[..., 0][keep],
            q[..., -1][keep],
            actual[keep],
        )
        if save:
            np.savez(f"{save}_{split}.npz", q=q, actual=actual, keep=keep)
        rmspe, wape = rmspe_wape(act, med)
        out[f"{split}_rmspe"], out[f"{split}_wape"] = round(rmspe, 4), round(wape, 4)
        out[f"{split}_cov"] = round(float(np.mean((act >= lo) & (act <= hi))), 3)
        if split == "test":
            median = q[..., qs.index(0.5)]
            out.update(by_origin_weekday(data[split]["origin"], actual, median, keep))
    return out


WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def by_origin_weekday(
    origin: np.ndarray, actual: np.ndarray, median: np.ndarray, keep: np.ndarray
) -> dict[str, Any]:
    """With test origins on several weekdays (``features.splits.test_stride=1``): the
    figures of the latest origin alone (the standard split's), RMSPE per origin weekday and
    horizon week, and issue 10's measure of the run date's weekday: at each horizon week,
    the largest |weekday / mean over weekdays - 1|; ``weekday_dev`` is the worst week's."""
    days = np.unique(origin)
    if len(days) < 2:
        return {}
    out: dict[str, Any] = {}
    last = (origin == days.max())[:, None] & keep
    r, w = rmspe_wape(actual[last], median[last])
    out["last_origin"] = str(days.max())
    out["last_rmspe"], out["last_wape"] = round(r, 4), round(w, 4)
    weekday = (origin.astype("datetime64[D]").view("int64") + 3) % 7  # 1970-01-01: a Thursday
    week = np.arange(actual.shape[1]) // 7
    table = {}
    for d in sorted(set(weekday.tolist())):
        row = []
        for k in range(int(week.max()) + 1):
            sel = (weekday == d)[:, None] & (week == k)[None, :] & keep
            row.append(rmspe_wape(actual[sel], median[sel])[0])
        table[WEEKDAYS[d]] = row
    grid = np.asarray(list(table.values()))  # [weekdays, weeks]
    dev = np.abs(grid / grid.mean(axis=0, keepdims=True) - 1).max(axis=0)
    out["weekday_dev"] = round(float(dev.max()), 4)
    out["weekday_dev_by_week"] = [round(float(v), 4) for v in dev]
    out["weekday_rmspe"] = {d: [round(float(v), 4) for v in row] for d, row in table.items()}
    return out


def padded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with every variant's keys ("" where a variant has none), for one table."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k, "") for k in keys} for r in rows]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="local")
    p.add_argument("--variant", action="append", required=True, help="name=key=value,...")
    p.add_argument("--name", default="")
    p.add_argument("--predictions", default="", help="directory for each variant's quantiles")
    p.add_argument("--limit", type=int, default=0, help="first N training windows (smoke run)")
    p.add_argument("overrides", nargs="*", help="config overrides shared by every variant")
    args = p.parse_args()
    base_cfg = load_config(ROOT / "conf", args.env, args.overrides)
    if args.predictions:
        os.makedirs(args.predictions, exist_ok=True)
    spec = read_spec(base_cfg.path("features"))
    data = {s: load_split(spec, s) for s in ("train", "val", "test")}
    if args.limit:
        data["train"] = {k: v[: args.limit] for k, v in data["train"].items()}
    print({s: len(d["scale"]) for s, d in data.items()}, flush=True)
    rows = []
    for text in args.variant:
        name, keys, own = parse_variant(text)
        cfg = load_config(ROOT / "conf", args.env, [*args.overrides, *keys])
        print(f"variant {name}: {keys} {own}", flush=True)
        save = f"{args.predictions}/{name}" if args.predictions else ""
        vspec, vdata = with_uplift(spec, data, own["uplift"]) if "uplift" in own else (spec, data)
        rows.append({"variant": name, **run_variant(cfg, vspec, vdata, own, save)})
        print(json.dumps(rows[-1]), flush=True)
        # written after every variant: a long run stopped part-way keeps the rows it measured
        out = write_results(
            args.name or f"network_{base_cfg.database}",
            {
                "command": "bench/bench_network.py --env "
                + args.env
                + " "
                + " ".join(
                    [f"--variant '{v}'" for v in args.variant[: len(rows)]] + args.overrides
                ),
                "features_id": spec.features_id,
                "split_rows": {s: len(d["scale"]) for s, d in data.items()},
                "rows": padded(rows),
            },
        )
    rows = padded(rows)
    print(table(rows, f"network ablation, {spec.dataset} features {spec.features_id}"))
    print(f"figures: {out.relative_to(ROOT)}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
