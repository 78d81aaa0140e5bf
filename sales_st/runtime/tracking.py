"""MLflow tracking and model registry for the jobs.

Each job opens one run (:func:`job_run`) in the experiment ``sales_st-<data.name>``: the
resolved config as params (dotted keys) and as ``config.json``, lineage tags (job, run date,
feature fingerprint, model id, parent model), metrics and artifacts.  A job started inside
another's run (the pipeline's, a tuning study's) becomes its child run.  Training follows
rank 0's checkpoint state while the ranks run (``sales_st.training.progress``), so each
epoch's losses appear as they happen.

The registry mirrors the model store: every network, LightGBM model and published ensemble
is a version of one registered model (``sales_st-<data.name>``), tagged with its store id,
and the store's aliases are set on it -- ``pretrained``, ``finetuned``, ``temporal_only``,
``lightgbm``, ``champion`` (what ``forecast.model: best`` publishes).  MLflow reserves
``latest`` (``models:/<name>/latest`` is the newest version), so the store's ``latest`` is
the registry's ``last_trained``.

Tracking never fails a job: when the store cannot be reached, or a call fails mid-run, the
job says so once and goes on untracked.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sales_st.config import Config, to_dict

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
# The model store's aliases as the registry spells them (MLflow reserves "latest").
REGISTRY_ALIASES = {"latest": "last_trained"}
MODEL_ID_TAG = "sales_st.model_id"
MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value
BATCH = 100  # params / metrics per log_batch call

_current: contextvars.ContextVar[TrackedRun | None] = contextvars.ContextVar(
    "sales_st_mlflow_run", default=None
)
_clients: dict[tuple[str, str], Any] = {}  # (tracking uri, registry uri) -> client, or None
_warned: set[str] = set()


def _warn_once(key: str, msg: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(msg, *args)


def tracking_uri(cfg: Config) -> str:
    """The configured tracking URI, or the SQLite file under the data dir; "" when there is
    nowhere to track (a remote data dir and no ``tracking.uri``)."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if "://" in cfg.data_dir:
        return ""
    return f"sqlite:///{os.path.join(cfg.data_dir, DEFAULT_DB)}"


def experiment_name(cfg: Config) -> str:
    return cfg.tracking.experiment or f"sales_st-{cfg.data.name}"


def registered_model_name(cfg: Config) -> str:
    return cfg.tracking.registered_model or f"sales_st-{cfg.data.name}"


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Dotted keys of a nested dict -> value as text (lists and empty dicts as JSON)."""
    if isinstance(tree, dict) and tree:
        out: dict[str, str] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    text = tree if isinstance(tree, str) else json.dumps(tree, default=str)
    return {prefix.rstrip("."): text[:MAX_PARAM_CHARS]}


def config_params(cfg: Config) -> dict[str, str]:
    """The resolved config as MLflow params (without where it came from)."""
    tree = to_dict(cfg)
    tree.pop("sources", None)
    tree.pop("root", None)
    return flatten(tree)


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # a server that does not answer costs timeout_s once, not minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def connect(cfg: Config) -> Any:
    """An ``MlflowClient`` for the configured stores, or None when tracking is off or the
    store cannot be reached (said once per process)."""
    if not cfg.tracking.enabled:
        return None
    uri = tracking_uri(cfg)
    if not uri:
        _warn_once(
            "no-uri",
            "MLflow tracking is off: paths.data_dir (%s) is not local and tracking.uri is not "
            "set; set tracking.uri to a tracking server to record runs",
            cfg.data_dir,
        )
        return None
    registry = cfg.tracking.registry_uri or uri
    key = (uri, registry)
    if key in _clients:
        return _clients[key]
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(cfg.tracking.timeout_s))
    client = None
    try:
        from mlflow.tracking import MlflowClient

        _quiet_mlflow()  # after the import: mlflow sets its loggers up when imported
        if uri.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(uri[len("sqlite:///") :]) or ".", exist_ok=True)
        client = MlflowClient(tracking_uri=uri, registry_uri=registry)
        client.search_experiments(max_results=1)  # reachable, and the schema is current
    except Exception as exc:  # any failure means: run untracked, and say so once
        _warn_once(
            f"connect:{uri}",
            "MLflow tracking at %s cannot be reached (%s): this job runs untracked",
            uri,
            _one_line(exc),
        )
        client = None
    _clients[key] = client
    return client


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class TrackedRun:
    """One MLflow run, or a no-op stand-in (``client`` None).  Every call swallows tracking
    failures: the first one is logged, and the run is untracked from then on."""

    def __init__(self, cfg: Config, client: Any = None, run_id: str | None = None):
        self.cfg, self.client, self.run_id = cfg, client, run_id

    @property
    def active(self) -> bool:
        return self.client is not None and self.run_id is not None

    def _call(self, what: str, fn: Any, *args: Any, run: bool = True, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, or None when untracked (``run``: the call needs a run)."""
        if self.client is None or (run and self.run_id is None):
            return None
        try:
            # a method of the client by name, or a function of the client and the arguments
            return (
                getattr(self.client, fn)(*args, **kwargs)
                if isinstance(fn, str)
                else fn(self.client, *args, **kwargs)
            )
        except Exception as exc:
            _warn_once(
                f"call:{self.run_id}",
                "MLflow tracking failed (%s: %s): the rest of this job is not tracked",
                what,
                _one_line(exc),
            )
            self.client = None
            return None

    # ---- runs ----------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        # config keys may hold any text (data.centroids' region names): MLflow allows letters,
        # digits and _-./ and space in a key
        items = [Param(_metric_key(k), str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            self._call("log params", "log_batch", self.run_id, params=items[i : i + BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), BATCH):
            self._call("set tags", "log_batch", self.run_id, tags=items[i : i + BATCH])

    def log_metrics(self, metrics: dict[str, float | None], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(_metric_key(k), float(v), now, step)
            for k, v in metrics.items()
            if v is not None and v == v  # not NaN
        ]
        for i in range(0, len(items), BATCH):
            self._call("log metrics", "log_batch", self.run_id, metrics=items[i : i + BATCH])

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        if os.path.isdir(local_dir):
            self._call("log artifacts", "log_artifacts", self.run_id, local_dir, artifact_path)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        if os.path.isfile(local_path):
            self._call("log artifact", "log_artifact", self.run_id, local_path, artifact_path)

    def log_dict(self, payload: Any, name: str) -> None:
        if self.active:
            self._call("log dict", "log_dict", self.run_id, payload, name)

    def artifact_uri(self, path: str) -> str | None:
        if not self.active:
            return None
        run = self._call("get run", "get_run", self.run_id)
        return f"{run.info.artifact_uri.rstrip('/')}/{path}" if run is not None else None

    # ---- registry ------------------------------------------------------------------
    def register(
        self,
        model_id: str,
        aliases: list[str],
        artifact_path: str | None = None,
        source: str | None = None,
        tags: dict[str, Any] | None = None,
    ) -> str | None:
        """Make ``model_id`` a version of the registered model (once: a model already
        registered keeps its version) and point the (store) ``aliases`` at it; returns the
        version.  The version's source is this run's ``artifact_path``, else ``source``."""
        if self.client is None:
            return None
        name = registered_model_name(self.cfg)
        version = self._call("find version", find_version, name, model_id, run=False)
        if version is None and self.client is not None:
            src = self.artifact_uri(artifact_path) if artifact_path and self.active else None
            src = src or source
            if src is None:
                return None
            self._call("create model", _ensure_registered_model, name, run=False)
            mv = self._call(
                "register model",
                "create_model_version",
                name,
                src,
                run_id=self.run_id,
                tags={MODEL_ID_TAG: model_id, **{k: str(v) for k, v in (tags or {}).items()}},
                run=False,
            )
            version = None if mv is None else str(mv.version)
        if version is None:
            return None
        for alias in aliases:
            self._call(
                "set alias",
                "set_registered_model_alias",
                name,
                registry_alias(alias),
                version,
                run=False,
            )
        return version

    def log_history(self, history: dict[str, list[float]], first: int = 0) -> None:
        """Epochs ``first``.. of a Keras history, one step per epoch."""
        epochs = max((len(v) for v in history.values()), default=0)
        for epoch in range(first, epochs):
            self.log_metrics(
                {k: v[epoch] for k, v in history.items() if epoch < len(v)}, step=epoch + 1
            )


def current(cfg: Config) -> TrackedRun:
    """The innermost open run (a job's metrics and artifacts go there), or a no-op one."""
    run = _current.get()
    return run if run is not None else TrackedRun(cfg)


@contextmanager
def tracked_job(cfg: Config, job: str, run_date: Any = None) -> Iterator[TrackedRun]:
    """The run of one job (or pipeline stage), timed; see :func:`log_record`."""
    started = time.perf_counter()
    name = f"{job} {run_date}" if run_date else job
    with job_run(cfg, job, name, {"run_date": run_date}) as run:
        yield run
        run.log_metrics({"seconds": time.perf_counter() - started})


def log_record(run: TrackedRun, record: Any) -> None:
    """What a job told the run manifest (a ``RunRecord``): its id and run date as tags, its
    counts and numeric details as metrics."""
    run.set_tags(
        {
            "sales_st.manifest_run_id": record.run_id,
            "sales_st.run_date": record.run_date,
            "sales_st.model_id": record.model_id,
        }
    )
    numbers = {k: getattr(record, k) for k in ("rows_in", "rows_out", "rows_quarantined")}
    for k, v in (record.details or {}).items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            numbers[k] = v
    run.log_metrics(numbers)


def registry(cfg: Config) -> TrackedRun:
    """The registry without a run: for aliases set on models trained earlier."""
    return TrackedRun(cfg, connect(cfg), None)


def registry_alias(alias: str) -> str:
    return REGISTRY_ALIASES.get(alias, alias).replace(".", "_")


def _metric_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def find_version(client: Any, name: str, model_id: str) -> str | None:
    """The version of ``name`` tagged with ``model_id``, if it is registered."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'", max_results=10_000)
    except MlflowException:
        return None
    for mv in versions:
        if (mv.tags or {}).get(MODEL_ID_TAG) == model_id:
            return str(mv.version)
    return None


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description="sales_st forecasters: networks, LightGBM and ensembles"
            )
        except MlflowException:  # created by another job in the same instant
            client.get_registered_model(name)


@contextmanager
def job_run(
    cfg: Config,
    job: str,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
) -> Iterator[TrackedRun]:
    """An MLflow run for one job (a child of the run that is open around it, if any), with
    the resolved config; ended FINISHED, FAILED or KILLED as the job ends."""
    client = connect(cfg)
    if client is None:
        yield TrackedRun(cfg)
        return
    run = TrackedRun(cfg, client)
    exp_id = run._call("experiment", _experiment_id, cfg, run=False)
    outer = _current.get()
    parent = outer.run_id if outer is not None and outer.active else None
    all_tags = {
        "sales_st.job": job,
        "sales_st.dataset": cfg.data.name,
        **({"mlflow.parentRunId": parent} if parent else {}),
        **{k if "." in k else f"sales_st.{k}": v for k, v in (tags or {}).items()},
    }
    created = (
        run._call(
            "create run",
            "create_run",
            exp_id,
            run_name=run_name or job,
            tags={k: str(v) for k, v in all_tags.items() if v is not None},
            run=False,
        )
        if exp_id is not None
        else None
    )
    if created is None:
        yield TrackedRun(cfg)
        return
    run.run_id = created.info.run_id
    run.log_params(config_params(cfg))
    run.log_dict({**to_dict(cfg), "sources": cfg.sources}, "config.json")
    token = _current.set(run)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _current.reset(token)
        run._call("end run", "set_terminated", run.run_id, status)


def _experiment_id(client: Any, cfg: Config) -> str:
    from mlflow.exceptions import MlflowException

    name = experiment_name(cfg)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if not cfg.tracking.uri and "://" not in cfg.data_dir:
        location = f"file://{os.path.join(cfg.data_dir, DEFAULT_ARTIFACTS)}"
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:  # another job created it in the same instant
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def main(argv: list[str] | None = None) -> int:
    """``python -m sales_st.runtime.tracking [--env E] [key=value ...]``: print the tracking
    URI and the artifact root of the configured store, one a line (for scripts/mlflow-ui.sh)."""
    import argparse
    import sys

    from sales_st.config import ConfigError, load_config
    from sales_st.runtime.jobs import DEFAULT_CONF

    p = argparse.ArgumentParser()
    p.add_argument("--conf", default=DEFAULT_CONF)
    p.add_argument("--env", default="local")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.conf, a.env, a.overrides)
    except ConfigError as exc:
        print(f"tracking: {exc}", file=sys.stderr)
        return 2
    uri = tracking_uri(cfg)
    if not uri:
        print("tracking: no tracking store: set tracking.uri", file=sys.stderr)
        return 2
    print(uri)
    print(os.path.join(cfg.data_dir, DEFAULT_ARTIFACTS) if not cfg.tracking.uri else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
