"""MLflow tracking and registry: runs with the resolved config, each epoch's losses, the
model's files, registered versions whose aliases mirror the model store; a tracking store
that cannot be reached costs one warning, never the job."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket

import pytest

from sales_st.runtime import tracking
from sales_st.training import store as model_store
from sales_st.training.driver import run_training
from tests.conftest import make_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def own_cfg(tmp_path_factory):
    """A config with a tracking store of its own (no Spark needed)."""
    return make_config(tmp_path_factory.mktemp("tracking"), "data.name=unit")


def runs_of(client, cfg, **tags):
    exp = client.get_experiment_by_name(tracking.experiment_name(cfg))
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time ASC"])


def test_flatten_gives_dotted_params():
    tree = {"a": {"b": 1, "c": [1, 2], "d": {}}, "e": "x", "f": None, "g": {"h": {"i": 2.5}}}
    assert tracking.flatten(tree) == {
        "a.b": "1",
        "a.c": "[1, 2]",
        "a.d": "{}",
        "e": "x",
        "f": "null",
        "g.h.i": "2.5",
    }
    assert tracking.registry_alias("latest") == "last_trained"


def test_params_with_any_config_key_are_logged(own_cfg):
    # region names in config keys (Rossmann's data.centroids: "HB,NI") are not MLflow names
    with tracking.job_run(own_cfg, "features") as run:
        run.log_params({"data.centroids.HB,NI": "[53.1, 8.8]", "a.b": "1"})
        assert run.active
    params = tracking.connect(own_cfg).get_run(run.run_id).data.params
    assert params["data.centroids.HB_NI"] == "[53.1, 8.8]" and params["a.b"] == "1"
    assert tracking.registry_alias("temporal_only") == "temporal_only"


def test_job_runs_nest_and_record_how_they_ended(own_cfg):
    with tracking.job_run(own_cfg, "pipeline") as outer:
        with tracking.job_run(own_cfg, "train", "m1", {"run_date": "2024-03-01"}) as inner:
            inner.log_history({"loss": [3.0, 2.0], "val_loss": [4.0, 3.5]})
            assert tracking.current(own_cfg) is inner
        with pytest.raises(ValueError):
            with tracking.job_run(own_cfg, "evaluate"):
                raise ValueError("boom")
    client = tracking.connect(own_cfg)
    parent = client.get_run(outer.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params == tracking.config_params(own_cfg)
    (train,) = runs_of(client, own_cfg, **{"sales_st.job": "train"})
    assert train.data.tags["mlflow.parentRunId"] == outer.run_id
    assert train.data.tags["sales_st.run_date"] == "2024-03-01"
    history = client.get_metric_history(train.info.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(1, 4.0), (2, 3.5)]
    (failed,) = runs_of(client, own_cfg, **{"sales_st.job": "evaluate"})
    assert failed.info.status == "FAILED"
    assert failed.data.tags["mlflow.parentRunId"] == outer.run_id
    config = json.loads(open(f"{parent.info.artifact_uri[len('file://') :]}/config.json").read())
    assert config["data"]["name"] == "unit" and config["sources"] == own_cfg.sources


def test_register_once_per_model_and_aliases_move(own_cfg):
    with tracking.job_run(own_cfg, "train") as run:
        v1 = run.register("m-1", ["latest", "pretrained"], source="file:///models/m-1")
        v2 = run.register("m-2", ["latest", "finetuned"], source="file:///models/m-2")
        again = run.register("m-1", ["champion"], source="file:///elsewhere")
    assert (v1, v2, again) == ("1", "2", "1")
    client = tracking.connect(own_cfg)
    name = tracking.registered_model_name(own_cfg)
    by_alias = {
        a: str(client.get_model_version_by_alias(name, a).version)
        for a in ("last_trained", "pretrained", "finetuned", "champion")
    }
    assert by_alias == {"last_trained": "2", "pretrained": "1", "finetuned": "2", "champion": "1"}
    mv = client.get_model_version(name, "1")
    assert mv.source == "file:///models/m-1" and mv.tags[tracking.MODEL_ID_TAG] == "m-1"


def test_unreachable_tracking_server_is_one_warning(own_cfg, caplog):
    cfg = dataclasses.replace(
        own_cfg,
        tracking=dataclasses.replace(own_cfg.tracking, uri=f"http://127.0.0.1:{free_port()}"),
    )
    with caplog.at_level(logging.WARNING, logger="sales_st.runtime.tracking"):
        for _ in range(2):
            with tracking.job_run(cfg, "forecast") as run:
                run.log_metrics({"x": 1.0})
                assert not run.active and run.register("m", ["latest"], source="x") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot be reached" in warnings[0], warnings


@pytest.mark.slow
def test_training_run_is_tracked_and_its_model_registered(tiny_cfg, tiny_model):
    client = tracking.connect(tiny_cfg)
    mid = tiny_model.model_id
    (run,) = runs_of(client, tiny_cfg, **{"sales_st.job": "train", "sales_st.model_id": mid})
    assert run.info.status == "FINISHED"
    assert run.data.params == tracking.config_params(tiny_cfg)
    tags = run.data.tags
    assert tags["sales_st.mode"] == "pretrain" and tags["sales_st.kind"] == "fused"
    spec = model_store.load_spec(tiny_cfg.path("models"), mid)
    assert tags["sales_st.features_id"] == spec.features_id
    # every epoch of rank 0's history, one step each
    mdir = model_store.model_dir(tiny_cfg.path("models"), mid)
    history = json.load(open(f"{mdir}/history.json"))
    for key in ("loss", "val_loss"):
        logged = client.get_metric_history(run.info.run_id, key)
        assert sorted((m.step, m.value) for m in logged) == [
            (i + 1, pytest.approx(v)) for i, v in enumerate(history[key])
        ]
    files = {f.path for f in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/weights.h5", "model/model.json", "model/feature_spec.json"} <= files
    assert client.list_artifacts(run.info.run_id, "tensorboard")
    name = tracking.registered_model_name(tiny_cfg)
    mv = client.get_model_version_by_alias(name, "pretrained")
    assert mv.tags[tracking.MODEL_ID_TAG] == mid and mv.run_id == run.info.run_id
    assert mv.source == f"{run.info.artifact_uri}/model"


@pytest.mark.slow
def test_unreachable_tracking_does_not_stop_a_training_job(spark, tiny_cfg, tiny_model, caplog):
    cfg = dataclasses.replace(
        tiny_cfg,
        tracking=dataclasses.replace(tiny_cfg.tracking, uri=f"http://127.0.0.1:{free_port()}"),
    )
    with caplog.at_level(logging.WARNING, logger="sales_st.runtime.tracking"):
        again = run_training(spark, cfg, "pretrain")  # complete: only the aliases move
    assert again.skipped and again.model_id == tiny_model.model_id
    assert any("cannot be reached" in m for m in caplog.messages)
