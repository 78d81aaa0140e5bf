"""Horovod training for real: 2 ranks (Gloo, CPU) on Spark, fed by Petastorm from Parquet."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from sales_st.config import to_dict
from sales_st.errors import DataError
from sales_st.features.spec import read_spec
from sales_st.runtime import tracking
from sales_st.training import store as model_store
from sales_st.training.driver import _setup, parquet_stats, run_training
from sales_st.training.worker import FAIL_AFTER_EPOCH_ENV, TrainPlan
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def with_paths(cfg, **paths):
    return dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, **paths))


@pytest.fixture(scope="module")
def pretrained(tiny_model):
    if tiny_model.skipped:
        pytest.skip("the tiny model was trained by another module; its run is checked there")
    return tiny_model


def test_two_ranks_lower_the_loss_and_end_identical(pretrained, tiny_cfg):
    results = pretrained.results
    assert [r["rank"] for r in results] == [0, 1] and {r["size"] for r in results} == {2}
    assert results[0]["digest"] == results[1]["digest"]
    assert results[0]["initial_digest"] == results[1]["initial_digest"]  # same seed on every rank
    hist = pretrained.history
    assert len(hist["loss"]) == tiny_cfg.train.epochs
    # every rank measured the same loss of the untrained model; training went below it
    initial = results[0]["initial_val_loss"]
    assert results[1]["initial_val_loss"] == pytest.approx(initial, rel=1e-6)
    assert hist["val_loss"][-1] < initial and min(hist["loss"]) < hist["loss"][0]
    root = tiny_cfg.path("models")
    mid = pretrained.model_id
    assert model_store.read_aliases(root)["latest"] == mid
    meta = model_store.load_meta(root, mid)
    assert meta["status"] == "complete" and meta["epochs_trained"] == tiny_cfg.train.epochs
    # the model keeps its best validation epoch, on every rank
    best = 1 + hist["val_loss"].index(min(hist["val_loss"]))
    assert meta["kept_epoch"] == best and {r["kept_epoch"] for r in results} == {best}
    d = model_store.model_dir(root, mid)
    for f in ("weights.h5", "feature_spec.json", "lineage.json", "history.json"):
        assert os.path.exists(f"{d}/{f}"), f
    assert os.listdir(f"{d}/tensorboard")
    lineage = json.load(open(f"{d}/lineage.json"))
    assert lineage["train"]["rows"] == parquet_stats(lineage["train"]["path"])[0] > 0


def test_rerun_of_a_finished_model_is_skipped(spark, tiny_cfg, pretrained):
    again = run_training(spark, tiny_cfg, "pretrain")
    assert (again.model_id, again.skipped, again.model_dir) == (
        pretrained.model_id,
        True,
        pretrained.model_dir,
    )


def test_failed_run_resumes_after_its_last_checkpoint(spark, tiny_cfg, tiny_features, monkeypatch):
    cfg = with_paths(tiny_cfg, models="models/tiny-resume")
    # with the weights' moving average, which the checkpoint carries across the resume; its
    # own registered model, so that the shared registry's aliases stay on the other tests'
    cfg = dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, weight_average=0.5),
        tracking=dataclasses.replace(cfg.tracking, registered_model="sales_st-tiny-resume"),
        # checkpoints and resumes do not depend on the network: the temporal-only one traces
        # in two thirds of the fused one's time, and this test trains four times
        model=dataclasses.replace(cfg.model, spatial=False),
    )
    monkeypatch.setenv(FAIL_AFTER_EPOCH_ENV, "2")
    with pytest.raises(Exception):  # noqa: B017 - Horovod re-raises the rank's error as its own
        run_training(spark, cfg, "pretrain")
    monkeypatch.delenv(FAIL_AFTER_EPOCH_ENV)
    root = cfg.path("models")
    mids = [d for d in os.listdir(root) if d.startswith("pretrain-")]
    assert len(mids) == 1
    state = json.load(open(f"{root}/{mids[0]}/checkpoints/state.json"))
    assert state["epoch"] == 2 and len(state["history"]["loss"]) == 2
    import tensorflow as tf

    saved = {name for name, _ in tf.train.list_variables(state["path"])}
    assert any(name.startswith("average/shadow/") for name in saved)
    assert model_store.load_meta(root, mids[0])["status"] == "training"
    out = run_training(spark, cfg, "pretrain")
    assert out.model_id == mids[0]
    assert {r["initial_epoch"] for r in out.results} == {2}
    assert state["initial_val_loss"] > 0  # measured once, before the first epoch, and kept
    assert {r["initial_val_loss"] for r in out.results} == {state["initial_val_loss"]}
    assert {r["epochs_run"] for r in out.results} == {cfg.train.epochs - 2}
    assert len(out.history["loss"]) == cfg.train.epochs
    assert out.history["loss"][:2] == state["history"]["loss"]

    # --force trains the finished model again from its first epoch.  Killed this time after
    # its last epoch's checkpoint (before the model is saved), the run resumes with nothing
    # left to train, and keeps the best epoch's weights, read back from its checkpoint.
    checkpoints = f"{root}/{mids[0]}/checkpoints"
    before = os.path.getmtime(f"{checkpoints}/epoch-0001.index")
    monkeypatch.setenv(FAIL_AFTER_EPOCH_ENV, str(cfg.train.epochs))
    with pytest.raises(Exception):  # noqa: B017
        run_training(spark, cfg, "pretrain", force=True)
    monkeypatch.delenv(FAIL_AFTER_EPOCH_ENV)
    assert os.path.getmtime(f"{checkpoints}/epoch-0001.index") > before  # trained again
    state = json.load(open(f"{checkpoints}/state.json"))
    assert state["epoch"] == cfg.train.epochs == len(state["history"]["loss"])
    assert model_store.load_meta(root, mids[0])["status"] == "training"
    last = run_training(spark, cfg, "pretrain")
    assert {r["initial_epoch"] for r in last.results} == {cfg.train.epochs}
    assert {r["epochs_run"] for r in last.results} == {0}
    val = state["history"]["val_loss"]
    best = val.index(min(val)) + 1
    assert {r["kept_epoch"] for r in last.results} == {best}
    assert len({r["digest"] for r in last.results}) == 1  # every rank holds the same weights
    # the saved model's weights are the best epoch's averages, as checkpointed
    full, _, _ = model_store.load_model(root, mids[0])
    ckpt = f"{checkpoints}/epoch-{best:04d}"
    shadow = [
        tf.train.load_variable(ckpt, name)
        for name, _ in tf.train.list_variables(ckpt)
        if name.startswith("average/shadow/")
    ]
    assert weight_sums(shadow) == weight_sums(w.numpy() for w in full.trainable_weights)


def weight_sums(arrays) -> list[tuple[tuple[int, ...], float]]:
    """Each array's shape and sum, sorted: equal for the same set of weights in any order."""
    import numpy as np

    return sorted((tuple(a.shape), float(np.sum(a, dtype=np.float64))) for a in arrays)


def test_finetune_starts_from_the_pretrained_weights(spark, tiny_cfg, pretrained):
    cfg = dataclasses.replace(
        tiny_cfg,
        train=dataclasses.replace(
            tiny_cfg.train,
            epochs=1,
            finetune=dataclasses.replace(
                tiny_cfg.train.finetune, segment="state = 'S01'", freeze=["temporal"]
            ),
        ),
    )
    out = run_training(spark, cfg, "finetune", parent="pretrained")
    root = cfg.path("models")
    parent_digest = pretrained.results[0]["digest"]
    assert {r["initial_digest"] for r in out.results} == {parent_digest}
    assert out.results[0]["digest"] != parent_digest  # and it did train
    meta = model_store.load_meta(root, out.model_id)
    assert meta["parent"] == pretrained.model_id and meta["freeze"] == ["temporal"]
    assert model_store.read_aliases(root)["finetuned"] == out.model_id
    # the registry's aliases moved with the store's: last_trained (the store's latest) and
    # finetuned to the new version, pretrained left on its parent's
    client, name = tracking.connect(cfg), tracking.registered_model_name(cfg)
    owner = {
        alias: client.get_model_version_by_alias(name, alias).tags[tracking.MODEL_ID_TAG]
        for alias in ("last_trained", "finetuned", "pretrained")
    }
    assert owner == {
        "last_trained": out.model_id,
        "finetuned": out.model_id,
        "pretrained": pretrained.model_id,
    }
    seg_rows = parquet_stats(f"{model_store.model_dir(root, out.model_id)}/segment/train")[0]
    all_rows = parquet_stats(read_spec(tiny_cfg.path("features")).split_path("train"))[0]
    assert 0 < seg_rows < all_rows


def test_finetune_from_another_store_copies_the_layers_that_fit(spark, tiny_cfg, pretrained):
    """``--from`` a model directory of another store, ``transfer=other_data``, no segment:
    on features of the same layout every layer fits, so the ranks start from the parent's
    weights, with the features' own scalers; the model records what it copied."""
    cfg = with_paths(tiny_cfg, models="models/tiny-transfer")
    cfg = dataclasses.replace(
        cfg,
        train=dataclasses.replace(
            cfg.train,
            epochs=1,
            max_steps_per_epoch=4,
            finetune=dataclasses.replace(cfg.train.finetune, segment="", transfer="other_data"),
        ),
        tracking=dataclasses.replace(cfg.tracking, registered_model="sales_st-tiny-transfer"),
    )
    parent_dir = pretrained.model_dir
    out = run_training(spark, cfg, "finetune", parent=parent_dir)
    assert {r["initial_digest"] for r in out.results} == {pretrained.results[0]["digest"]}
    meta = model_store.load_meta(cfg.path("models"), out.model_id)
    assert meta["parent"] == pretrained.model_id and meta["transfer"] == "other_data"
    assert meta["parent_weights"] == f"{parent_dir}/weights.h5"
    assert meta["segment"] is None and not meta["layers"]["fresh"]
    assert len(meta["layers"]["copied"]) > 20
    assert "temporal_encoder/temporal_lstm_0" in meta["layers"]["copied"]
    # trained on every series, not a segment
    assert not os.path.exists(f"{model_store.model_dir(cfg.path('models'), out.model_id)}/segment")
    # a parent of another layout needs other_data: the default names the option
    other = model_store.load_spec(tiny_cfg.path("models"), pretrained.model_id)
    changed = dataclasses.replace(other.layout, fut=other.layout.fut + ["fut_extra"])
    with pytest.raises(DataError, match="transfer=other_data"):
        _setup(tiny_cfg, other.replace(layout=changed), "finetune", parent_dir)
    assert _setup(cfg, other.replace(layout=changed), "finetune", parent_dir).transfer == (
        "other_data"
    )


def test_same_worker_runs_under_horovodrun(tmp_path, tiny_cfg, tiny_features):
    spec = read_spec(tiny_cfg.path("features"))
    rows, groups = parquet_stats(spec.split_path("train"))
    vrows, vgroups = parquet_stats(spec.split_path("val"))
    train = dataclasses.replace(
        tiny_cfg.train,
        epochs=1,
        batch_size=32,
        warmup_epochs=0,
        patience=2,
        seed=1,
        shuffle_buffer=64,
        max_steps_per_epoch=3,
    )
    plan = TrainPlan(
        spec=spec.to_dict(),
        # the launcher is what is tested: the temporal-only network traces faster
        model=to_dict(dataclasses.replace(tiny_cfg.model, spatial=False)),
        train=to_dict(train),
        train_url="file://" + spec.split_path("train"),
        val_url="file://" + spec.split_path("val"),
        train_rows=rows,
        val_rows=vrows,
        train_row_groups=groups,
        val_row_groups=vgroups,
        model_dir=str(tmp_path / "m"),
        learning_rate=0.002,
    )
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())
    venv_bin = os.path.dirname(sys.executable)
    proc = subprocess.run(
        [
            f"{venv_bin}/horovodrun",
            "-np",
            "2",
            "--gloo",
            "-H",
            "localhost:2",
            sys.executable,
            "-m",
            "sales_st.training.worker",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [
        json.loads(line.split(":", 1)[1]) for line in proc.stdout.splitlines() if '"digest"' in line
    ]
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert len({r["digest"] for r in results}) == 1
    assert (tmp_path / "m" / "weights.h5").exists()


def write_examples(directory, n_files: int, per_file: int, order=None) -> None:
    """Fake examples with a window id in lag_1 (standardised by the fake spec's scaler:
    (v - 1) / 0.5): window w is series w // 10 (store, item), origin day w % 10; written as
    ``n_files`` files of windows taken in ``order`` (default: by id)."""
    import datetime as dt

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.test_model import fake_columns

    n = n_files * per_file
    order = np.arange(n) if order is None else np.asarray(order)
    cols = fake_columns(seed=0, n=n)
    cols["lag_1"] = np.arange(n, dtype="float32") / 100
    cols["store_id"] = np.array([f"s{w // 10 // 2}" for w in range(n)])
    cols["item_id"] = np.array([f"i{w // 10 % 2}" for w in range(n)])
    cols["origin"] = np.array([dt.date(2015, 1, 1) + dt.timedelta(w % 10) for w in range(n)])
    table = pa.table({c: list(v) if v.ndim > 1 else v for c, v in cols.items()}).take(order)
    directory.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        pq.write_table(table.slice(f * per_file, per_file), directory / f"part-{f}.parquet")


def window_ids(x) -> list[int]:
    import numpy as np

    return [int(round((v * 0.5 + 1.0) * 100)) for v in np.asarray(x["num"])[:, 0]]


@pytest.mark.parametrize("size", [1, 2])
def test_memory_input_permutes_all_windows_every_epoch(tmp_path, size):
    """``train.input: memory``: each epoch of a rank's batches is a permutation of all of its
    windows (a fresh one each epoch); two ranks split the series between them, every window
    of a series on one rank, no window twice; validation keeps the (series, origin) order."""
    from sales_st.config import TrainConfig
    from sales_st.training.worker import _memory_dataset
    from tests.test_model import fake_spec

    spec = fake_spec()
    n_files, per_file, batch = 4, 40, 8  # 16 series of 10 windows
    write_examples(tmp_path, n_files, per_file)
    tcfg = TrainConfig(batch_size=batch, seed=3)

    seen = []
    for rank in range(size):
        ds = _memory_dataset(f"file://{tmp_path}", spec, tcfg, rank, size, shuffle=True)
        n = n_files * per_file // size
        ids = []
        for x, y in ds.take(2 * n // batch):  # two epochs (n is a multiple of the batch)
            assert x["hist"].shape[0] == y.shape[0] == batch
            ids += window_ids(x)
        first, second = ids[:n], ids[n:]
        assert sorted(first) == sorted(second) and len(set(first)) == n
        assert first != second  # reshuffled
        assert first != sorted(first)
        # whole series: the 8 series (of 16) of rank r are r, r + 2, ... in key order
        assert sorted({w // 10 for w in first}) == list(range(16))[rank::size]
        seen += first
    assert len(set(seen)) == n_files * per_file
    val = _memory_dataset(f"file://{tmp_path}", spec, tcfg, 0, 1, shuffle=False)
    ordered = [i for x, _ in val.take(n_files * per_file // batch) for i in window_ids(x)]
    assert ordered == list(range(n_files * per_file))


def test_memory_input_does_not_depend_on_the_file_layout(tmp_path):
    """The same examples in one file in key order or in five files in a shuffled order (the
    feature job's write tasks) give each rank the same table and, for a seed, the same
    batches: the file layout does not change the network a seed trains."""
    import numpy as np

    from sales_st.config import TrainConfig
    from sales_st.features import names as N
    from sales_st.training.worker import _memory_dataset, memory_share
    from tests.test_model import fake_spec

    spec = fake_spec()
    n = 200
    write_examples(tmp_path / "one", 1, n)
    write_examples(tmp_path / "five", 5, n // 5, order=np.random.default_rng(1).permutation(n))
    columns = [*spec.layout.all_columns(), *N.SERIES, N.ORIGIN]
    tcfg = TrainConfig(batch_size=16, seed=5)
    for rank in (0, 1):
        one = memory_share(f"file://{tmp_path / 'one'}", columns, rank, 2)
        five = memory_share(f"file://{tmp_path / 'five'}", columns, rank, 2)
        assert one.num_rows == n // 2
        assert one.equals(five)
        batches = [
            [
                window_ids(x)
                for x, _ in _memory_dataset(
                    f"file://{tmp_path / d}", spec, tcfg, rank, 2, shuffle=True
                ).take(8)
            ]
            for d in ("one", "five")
        ]
        assert batches[0] == batches[1]
    # the names the worker reads are the data contract's key
    from sales_st.data.contract import SERIES_KEY

    assert list(N.SERIES) == SERIES_KEY
