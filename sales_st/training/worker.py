"""Distributed training: the Horovod worker function and the plan it runs.

The driver (``jobs/train.py``) writes a :class:`TrainPlan` -- plain JSON-able data -- and
starts ``train_worker`` on Spark executors with ``horovod.spark.run``; the same function runs
under ``horovodrun`` via ``python -m sales_st.training.worker PLAN.json``.  Each rank:

* pins one GPU per local rank when there are GPUs, else limits its CPU threads;
* reads its shard of the example Parquet with Petastorm ``make_batch_reader`` into
  ``tf.data`` (shuffled row groups, shuffle buffer, prefetch);
* trains with ``hvd.DistributedOptimizer``, the learning rate scaled by the number of ranks
  with warm-up, broadcast and metric-average callbacks first, early stopping on the
  (rank-averaged) validation loss;
* rank 0 checkpoints every epoch (weights and optimizer state) and writes TensorBoard logs;
  a re-run of a failed run resumes after the last checkpointed epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import resource
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

from sales_st.config import ModelConfig, TrainConfig
from sales_st.config.loader import from_dict
from sales_st.features.spec import FeatureSpec

log = logging.getLogger(__name__)

# Fault injection for the resume test: fail after this epoch has been checkpointed.
FAIL_AFTER_EPOCH_ENV = "SALES_ST_FAIL_AFTER_EPOCH"


STOP_FILE = "STOP"  # <model dir>/STOP: end the training after the current epoch


@dataclass
class TrainPlan:
    """Everything a rank needs, as plain JSON-able data (the driver writes it, ranks read it)."""

    spec: dict[str, Any]  # FeatureSpec.to_dict()
    model: dict[str, Any]  # ModelConfig
    train: dict[str, Any]  # TrainConfig
    train_url: str
    val_url: str
    train_rows: int
    val_rows: int
    train_row_groups: int
    val_row_groups: int
    model_dir: str
    learning_rate: float  # per rank, before scaling by the number of ranks
    init_weights: str = ""  # fine-tuning: the parent model's weights
    freeze: list[str] = field(default_factory=list)
    # same_features: the parent has this model's inputs; other_data: copy the layers that fit
    transfer: str = "same_features"

    @property
    def checkpoint_dir(self) -> str:
        return f"{self.model_dir}/checkpoints"

    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec.from_dict(self.spec)

    def model_config(self) -> ModelConfig:
        return from_dict(ModelConfig, self.model)

    def train_config(self) -> TrainConfig:
        return from_dict(TrainConfig, self.train)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainPlan:
        return cls(**json.loads(text))


def steps(rows: int, ranks: int, batch: int, cap: int = 0) -> int:
    n = max(1, rows // max(1, ranks * batch))
    return min(n, cap) if cap else n


def weights_digest(model) -> str:
    """A hash of every weight: equal on all ranks after synchronous training."""
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(w.tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def _quiet_exit(reader: Any) -> Any:
    """A Petastorm reader as a context, closed without its print to stdout ("Cache cleanup
    complete.", once per reader and rank)."""
    with contextlib.ExitStack() as stack:
        stack.push(lambda *exc: _exit_quietly(reader, *exc))
        yield reader.__enter__()


def _exit_quietly(reader: Any, *exc: Any) -> bool:
    with contextlib.redirect_stdout(io.StringIO()):
        return bool(reader.__exit__(*exc))


def _dataset(
    url: str,
    spec: FeatureSpec,
    tcfg: TrainConfig,
    rank: int,
    size: int,
    row_groups: int,
    shuffle: bool,
):
    import tensorflow as tf
    from petastorm import make_batch_reader
    from petastorm.tf_utils import make_petastorm_dataset

    from sales_st.model.tensors import model_inputs_from_columns, targets_from_columns

    # Shard by row group when every rank gets at least one; tiny splits are read whole.
    shard = dict(cur_shard=rank, shard_count=size) if row_groups >= size else {}
    reader = make_batch_reader(
        url,
        schema_fields=spec.layout.all_columns(),
        num_epochs=None,
        shuffle_row_groups=shuffle,
        seed=tcfg.seed + rank,
        reader_pool_type=tcfg.reader_pool,
        workers_count=2,
        **shard,
    )

    def to_xy(batch):
        cols = batch._asdict()
        return model_inputs_from_columns(cols, spec), targets_from_columns(cols)

    ds = make_petastorm_dataset(reader).map(to_xy).unbatch()
    if shuffle:
        ds = ds.shuffle(tcfg.shuffle_buffer, seed=tcfg.seed + rank)
    ds = ds.batch(tcfg.batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)
    return reader, ds


def memory_share(url: str, columns: list[str], rank: int, size: int) -> Any:
    """The rank's share of an example table as one Arrow table: every ``size``-th series in
    key order, its windows ordered by (series, origin).  The same examples give every rank
    the same rows in the same order however the feature job laid them out in files (the
    number of write tasks, their order), so that a seed trains the same network."""
    import fsspec
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from sales_st.features import names as N

    fs, path = fsspec.core.url_to_fs(url)
    files = sorted(f for f in fs.find(path) if f.endswith(".parquet"))
    key = [*N.SERIES, N.ORIGIN]
    series = pq.ParquetDataset(files, filesystem=fs).read(columns=list(N.SERIES))
    # every series once, in key order; series i belongs to rank i % size
    names = sorted(set(zip(*(series.column(c).to_pylist() for c in N.SERIES))))
    mine = {s for i, s in enumerate(names) if i % size == rank}
    wanted = list(dict.fromkeys([*columns, *key]))
    parts = []
    for f in files:  # file by file: a rank holds one file beside its share, not the table
        t = pq.read_table(f, columns=wanted, filesystem=fs)
        keys = zip(*(t.column(c).to_pylist() for c in N.SERIES))
        keep = np.fromiter((k in mine for k in keys), dtype=bool, count=t.num_rows)
        parts.append(t.filter(pa.array(keep)))
    table = pa.concat_tables(parts)
    order = pc.sort_indices(table, sort_keys=[(c, "ascending") for c in key])
    return table.take(order).select(columns)


def _memory_dataset(
    url: str, spec: FeatureSpec, tcfg: TrainConfig, rank: int, size: int, shuffle: bool
):
    """The rank's share of the examples (``memory_share``) loaded into tensors (the in-memory
    input)."""
    import tensorflow as tf

    from sales_st.model.tensors import (
        columns_from_arrow,
        model_inputs_from_columns,
        targets_from_columns,
    )

    columns = spec.layout.all_columns()
    cols = columns_from_arrow(memory_share(url, columns, rank, size), columns)
    x, y = model_inputs_from_columns(cols, spec), targets_from_columns(cols)
    # batches of row indices, gathered from the tensors: every epoch is a fresh permutation
    # of all the rank's windows (they are held in series order, which a shuffle buffer of a
    # few thousand rows would hardly mix)
    idx = tf.data.Dataset.range(int(y.shape[0]))
    if shuffle:
        idx = idx.shuffle(int(y.shape[0]), seed=tcfg.seed + rank, reshuffle_each_iteration=True)
    ds = idx.repeat().batch(tcfg.batch_size)
    ds = ds.map(lambda i: (tf.nest.map_structure(lambda t: tf.gather(t, i), x), tf.gather(y, i)))
    return ds.prefetch(tf.data.AUTOTUNE)


def read_state(checkpoint_dir: str) -> dict[str, Any] | None:
    from sales_st.storage.files import json_exists, read_json
    from sales_st.training.callbacks import CHECKPOINT_STATE

    path = f"{checkpoint_dir}/{CHECKPOINT_STATE}"
    return read_json(path) if json_exists(path) else None


def _init_rank(hvd: Any) -> str:
    """Logging, device and thread settings for this rank; returns the device name."""
    import tensorflow as tf

    rank, size = hvd.rank(), hvd.size()
    warnings.filterwarnings("ignore", category=FutureWarning)  # petastorm on pyarrow 14
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        force=True,
        format=f"%(asctime)s rank{rank}/{size} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("sales_st").setLevel(logging.INFO)
    # TF's logger prints each line a second time through its own handler; and Keras' note that
    # a callback is slow next to tiny batches (Horovod's averaging) is not a problem to report
    tf_logger = tf.get_logger()
    tf_logger.handlers.clear()
    tf_logger.addFilter(lambda r: "is slow compared to the batch time" not in r.getMessage())
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        gpu = gpus[hvd.local_rank() % len(gpus)]
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")
    else:
        threads = max(1, (os.cpu_count() or 1) // max(1, hvd.local_size()))
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(2)
    device = gpus[hvd.local_rank() % len(gpus)].name if gpus else "CPU"
    log.info(
        "rank %d of %d on host %s, pid %d, device %s, executor dir %s, python %s",
        rank,
        size,
        os.uname().nodename,
        os.getpid(),
        device,
        os.environ.get("HOROVOD_SPARK_WORK_DIR", os.getcwd()),
        sys.executable,
    )
    return device


def _datasets(
    plan: TrainPlan, spec: FeatureSpec, tcfg: TrainConfig, rank: int, size: int
) -> tuple[Any, Any, Any, Any]:
    """(train reader, train dataset, val reader, val dataset); readers are context managers."""
    if tcfg.input == "memory":
        train_ds = _memory_dataset(plan.train_url, spec, tcfg, rank, size, shuffle=True)
        val_ds = _memory_dataset(plan.val_url, spec, tcfg, rank, size, shuffle=False)
        return contextlib.nullcontext(), train_ds, contextlib.nullcontext(), val_ds
    train_reader, train_ds = _dataset(
        plan.train_url, spec, tcfg, rank, size, plan.train_row_groups, shuffle=True
    )
    val_reader, val_ds = _dataset(
        plan.val_url, spec, tcfg, rank, size, plan.val_row_groups, shuffle=False
    )
    return train_reader, train_ds, val_reader, val_ds


def _callbacks(
    hvd: Any,
    tcfg: TrainConfig,
    lr: float,
    steps_per_epoch: int,
    timer: Any,
    best: Any,
    checkpointer: Any,
    model_dir: str,
) -> list[Any]:
    """Horovod's broadcast and metric averaging first, then warm-up, early stopping, the best
    (averaged) weights, LR decay; rank 0 adds the checkpointer and TensorBoard; then the stop
    on request (the file ``<model dir>/STOP``); the injected failure comes last."""
    from tensorflow import keras

    from sales_st.training import callbacks as cb

    callbacks = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
        hvd.callbacks.LearningRateWarmupCallback(
            initial_lr=lr,
            warmup_epochs=tcfg.warmup_epochs,
            steps_per_epoch=steps_per_epoch,
            verbose=0,
        ),
        # it only stops; the weights the model keeps are best's (also after the last epoch)
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=tcfg.patience),
        best,
        timer,
    ]
    if tcfg.lr_decay_patience:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=tcfg.lr_decay_patience, min_lr=lr / 32
            )
        )
    if checkpointer is not None:
        callbacks += [
            checkpointer,
            keras.callbacks.TensorBoard(
                log_dir=f"{model_dir}/tensorboard",
                histogram_freq=0,
                profile_batch=0,
                write_graph=False,
            ),
        ]
    # after the checkpointer: an epoch asked to be the last is still checkpointed
    callbacks.append(cb.StopOnRequest(f"{model_dir}/{STOP_FILE}", hvd))
    fail_after = int(os.environ.get(FAIL_AFTER_EPOCH_ENV, "0") or 0)
    if fail_after:
        callbacks.append(cb.FailAfter(fail_after))
    return callbacks


def _compiled_model(
    plan: TrainPlan, spec: FeatureSpec, mcfg: ModelConfig, hvd: Any
) -> tuple[Any, Any, Any, str, dict[str, list[str]] | None]:
    """(full model, its quantile-output twin compiled with the distributed optimizer, the
    optimizer, the digest of the starting weights -- the parent's when fine-tuning, and with
    ``transfer`` other_data the layers copied from the parent and those left fresh)."""
    from tensorflow import keras

    from sales_st.model.network import build_model, model_loss, set_trainable, training_output

    full = build_model(spec, mcfg)
    model = keras.Model(full.input, full.output[training_output(mcfg)])
    copied: set[str] | None = None
    layers: dict[str, list[str]] | None = None
    if plan.init_weights and plan.transfer == "other_data":
        copied, layers = _transfer_from(plan, spec, full)
    elif plan.init_weights:
        full.load_weights(plan.init_weights)
        log.info("initialised from %s", plan.init_weights)
    initial_digest = weights_digest(full)
    frozen = set_trainable(full, plan.freeze, only=copied)
    if frozen:
        log.info("frozen encoders %s (%d layers)", plan.freeze, len(frozen))
    lr = plan.learning_rate * hvd.size()
    opt = hvd.DistributedOptimizer(keras.optimizers.legacy.Adam(learning_rate=lr))
    model.compile(optimizer=opt, loss=model_loss(mcfg))
    return full, model, opt, initial_digest, layers


def _transfer_from(
    plan: TrainPlan, spec: FeatureSpec, full: Any
) -> tuple[set[str], dict[str, list[str]]]:
    """Copy into ``full`` the parent's layers that fit it (:func:`transfer_weights`); the
    parent is loaded from the model store, as scoring loads it."""
    from sales_st.model.network import transfer_weights
    from sales_st.training.store import load_model

    parent_root, _, parent_id = plan.init_weights.rpartition("/")[0].rpartition("/")
    parent, parent_spec, _ = load_model(parent_root, parent_id)
    copied, fresh = transfer_weights(parent, full, parent_spec, spec)
    log.info(
        "initialised %d of %d layers from %s; from scratch: %s",
        len(copied),
        len(copied) + len(fresh),
        plan.init_weights,
        ", ".join(fresh) or "none",
    )
    return set(copied), {"copied": copied, "fresh": fresh}


def train_worker(plan: TrainPlan | str) -> dict[str, Any]:
    """One Horovod rank.  Returns its final weights digest and, on rank 0, the history."""
    if isinstance(plan, str):
        plan = TrainPlan.from_json(plan)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf
    from tensorflow import keras

    from sales_st.storage.files import write_json
    from sales_st.training import callbacks as cb

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    device = _init_rank(hvd)
    spec, mcfg, tcfg = plan.feature_spec(), plan.model_config(), plan.train_config()
    keras.utils.set_random_seed(tcfg.seed)  # python, numpy and TF: same init on every rank

    full, model, opt, initial_digest, layers = _compiled_model(plan, spec, mcfg, hvd)
    state = read_state(plan.checkpoint_dir)
    initial_epoch = int(state["epoch"]) if state else 0
    history: dict[str, list[float]] = state.get("history", {}) if state else {}
    lr = plan.learning_rate * size
    steps_per_epoch = steps(
        round(plan.train_rows * tcfg.epoch_fraction),
        size,
        tcfg.batch_size,
        tcfg.max_steps_per_epoch,
    )

    def restore_epoch(epoch: int) -> None:
        """Put back the checkpoint of an epoch from before a resume (rank 0 reads it, every
        rank receives it), so that all ranks end with the same weights."""
        import horovod.tensorflow as hvd_tf  # the Keras module has no broadcast_variables

        if rank == 0:
            ckpt.read(f"{plan.checkpoint_dir}/epoch-{epoch:04d}").expect_partial()
        hvd_tf.broadcast_variables(model.variables + list(best.state.variables), root_rank=0)

    best = cb.BestWeights(
        model, cb.average_decay(tcfg.weight_average, steps_per_epoch), history, restore_epoch
    )
    ckpt = tf.train.Checkpoint(model=model, optimizer=opt, average=best.state)
    if state:
        ckpt.restore(state["path"]).expect_partial()
        log.info("resuming after epoch %d from %s", initial_epoch, state["path"])
    val_steps = steps(plan.val_rows, size, tcfg.batch_size, tcfg.max_steps_per_epoch)
    train_reader, train_ds, val_reader, val_ds = _datasets(plan, spec, tcfg, rank, size)
    with _quiet_exit(train_reader), _quiet_exit(val_reader):
        if state:
            initial_val_loss = state.get("initial_val_loss")
        else:
            # The loss of the starting weights (random, or the parent's when fine-tuning):
            # the reference every epoch's val_loss is read against.
            before = model.evaluate(val_ds, steps=val_steps, verbose=0)
            initial_val_loss = float(
                hvd.allreduce(
                    tf.constant(before, tf.float32), op=hvd.Average, name="initial_val_loss"
                )
            )
            if rank == 0:  # the same on every rank
                log.info("val loss before training: %.4f", initial_val_loss)
        timer = cb.EpochTimer()
        checkpointer = (
            cb.Checkpointer(ckpt, plan.checkpoint_dir, history, initial_val_loss)
            if rank == 0
            else None
        )
        callbacks = _callbacks(
            hvd, tcfg, lr, steps_per_epoch, timer, best, checkpointer, plan.model_dir
        )
        if rank == 0:  # one line per epoch, in place of Keras' own
            examples = steps_per_epoch * tcfg.batch_size * size
            progress = cb.EpochProgress(tcfg.epochs, initial_epoch, examples)
            callbacks.insert(callbacks.index(timer) + 1, progress)
        fit = model.fit(
            train_ds,
            steps_per_epoch=steps_per_epoch,
            validation_data=val_ds,
            validation_steps=val_steps,
            epochs=tcfg.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=0,
        )
    if checkpointer is not None:
        history = checkpointer.history
    result = {
        "rank": rank,
        "size": size,
        "digest": weights_digest(full),
        "initial_digest": initial_digest,
        "initial_epoch": initial_epoch,
        "initial_val_loss": initial_val_loss,
        "epochs_run": len(fit.history.get("loss", [])),
        "kept_epoch": best.best_epoch,
        "host": os.uname().nodename,
        "device": device,
        "epoch_seconds": timer.seconds,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": tcfg.batch_size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "layers": layers,
    }
    if rank == 0:
        from sales_st.training.store import save_weights

        save_weights(full, spec, plan.model_dir)
        write_json(f"{plan.model_dir}/history.json", history)
        result["history"] = history
    return result


def main(argv: list[str] | None = None) -> int:
    """``horovodrun -np 2 --gloo python -m sales_st.training.worker PLAN.json``"""
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as fh:
        result = train_worker(TrainPlan.from_json(fh.read()))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
