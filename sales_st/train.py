"""Distributed training: the Horovod worker function and the plan it runs.

The driver (``jobs/train.py``) writes a :class:`TrainPlan` -- plain JSON-able data -- and
starts ``train_worker`` on Spark executors with ``horovod.spark.run``; the same function runs
under ``horovodrun`` via ``python -m sales_st.train PLAN.json``.  Each rank:

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
import json
import logging
import os
import resource
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CHECKPOINT_STATE = "state.json"
# Fault injection for the resume test: fail after this epoch has been checkpointed.
FAIL_AFTER_EPOCH_ENV = "SALES_ST_FAIL_AFTER_EPOCH"


@dataclass
class TrainPlan:
    spec: dict[str, Any]
    model: dict[str, Any]  # ModelConfig fields
    train_url: str
    val_url: str
    train_rows: int
    val_rows: int
    train_row_groups: int
    val_row_groups: int
    model_dir: str
    epochs: int
    batch_size: int
    learning_rate: float
    warmup_epochs: int
    patience: int
    seed: int
    shuffle_buffer: int
    max_steps_per_epoch: int = 0
    lr_decay_patience: int = 0
    init_weights: str = ""  # fine-tuning: the parent model's weights
    freeze: list[str] = field(default_factory=list)
    reader_pool: str = "thread"
    # "petastorm" streams the rank's row groups from Parquet; "memory" loads the rank's files
    # into tensors first (for small data, and as the benchmark's reference).
    input_mode: str = "petastorm"

    @property
    def checkpoint_dir(self) -> str:
        return f"{self.model_dir}/checkpoints"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "TrainPlan":
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


def _dataset(url: str, plan: TrainPlan, columns: list[str], rank: int, size: int,
             row_groups: int, shuffle: bool):
    import tensorflow as tf
    from petastorm import make_batch_reader
    from petastorm.tf_utils import make_petastorm_dataset

    from sales_st.inputs import model_inputs_from_columns, targets_from_columns

    # Shard by row group when every rank gets at least one; tiny splits are read whole.
    shard = dict(cur_shard=rank, shard_count=size) if row_groups >= size else {}
    reader = make_batch_reader(
        url, schema_fields=columns, num_epochs=None, shuffle_row_groups=shuffle,
        seed=plan.seed + rank, reader_pool_type=plan.reader_pool, workers_count=2, **shard,
    )
    spec = plan.spec

    def to_xy(batch):
        cols = batch._asdict()
        return model_inputs_from_columns(cols, spec), targets_from_columns(cols)

    ds = make_petastorm_dataset(reader).map(to_xy).unbatch()
    if shuffle:
        ds = ds.shuffle(plan.shuffle_buffer, seed=plan.seed + rank)
    ds = ds.batch(plan.batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)
    return reader, ds


def _memory_dataset(url: str, plan: TrainPlan, columns: list[str], rank: int, size: int,
                    shuffle: bool):
    """The rank's share of the files, loaded into tensors (the in-memory reference input)."""
    import fsspec
    import pyarrow.parquet as pq
    import tensorflow as tf

    from sales_st.inputs import (columns_from_pandas, model_inputs_from_columns,
                                 targets_from_columns)

    fs, path = fsspec.core.url_to_fs(url)
    files = sorted(f for f in fs.find(path) if f.endswith(".parquet"))
    mine = files[rank::size] if len(files) >= size else files
    table = pq.ParquetDataset(mine, filesystem=fs).read(columns=columns)
    cols = columns_from_pandas(table.to_pandas(), columns)
    ds = tf.data.Dataset.from_tensor_slices(
        (model_inputs_from_columns(cols, plan.spec), targets_from_columns(cols))).repeat()
    if shuffle:
        ds = ds.shuffle(plan.shuffle_buffer, seed=plan.seed + rank)
    return ds.batch(plan.batch_size).prefetch(tf.data.AUTOTUNE)


def read_state(checkpoint_dir: str) -> dict[str, Any] | None:
    from sales_st.io import json_exists, read_json

    path = f"{checkpoint_dir}/{CHECKPOINT_STATE}"
    return read_json(path) if json_exists(path) else None


def train_worker(plan: TrainPlan | str) -> dict[str, Any]:
    """One Horovod rank.  Returns its final weights digest and, on rank 0, the history."""
    if isinstance(plan, str):
        plan = TrainPlan.from_json(plan)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf
    from tensorflow import keras

    from sales_st.config import ModelConfig
    from sales_st.inputs import needed_columns
    from sales_st.io import write_json
    from sales_st.model import build_model, pinball_loss, set_trainable

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    warnings.filterwarnings("ignore", category=FutureWarning)  # petastorm on pyarrow 14
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True,
                        format=f"%(asctime)s rank{rank}/{size} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sales_st").setLevel(logging.INFO)
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
    log.info("rank %d of %d on host %s, pid %d, device %s, executor dir %s, python %s", rank,
             size, os.uname().nodename, os.getpid(), device,
             os.environ.get("HOROVOD_SPARK_WORK_DIR", os.getcwd()), sys.executable)
    keras.utils.set_random_seed(plan.seed)  # python, numpy and TF: same init on every rank

    mcfg = ModelConfig(**plan.model)
    full = build_model(plan.spec, mcfg)
    model = keras.Model(full.input, full.output["quantiles"])
    if plan.init_weights:
        full.load_weights(plan.init_weights)
        log.info("initialised from %s", plan.init_weights)
    initial_digest = weights_digest(full)  # fine-tuning: must equal the parent's weights
    frozen = set_trainable(full, plan.freeze)
    if frozen:
        log.info("frozen encoders %s (%d layers)", plan.freeze, len(frozen))

    lr = plan.learning_rate * size
    opt = hvd.DistributedOptimizer(keras.optimizers.legacy.Adam(learning_rate=lr))
    model.compile(optimizer=opt, loss=pinball_loss(mcfg.quantiles))

    ckpt = tf.train.Checkpoint(model=model, optimizer=opt)
    state = read_state(plan.checkpoint_dir)
    initial_epoch = 0
    history: dict[str, list[float]] = {}
    if state:
        ckpt.restore(state["path"]).expect_partial()
        initial_epoch = int(state["epoch"])
        history = state.get("history", {})
        log.info("resuming after epoch %d from %s", initial_epoch, state["path"])

    columns = needed_columns(plan.spec)
    steps_per_epoch = steps(plan.train_rows, size, plan.batch_size, plan.max_steps_per_epoch)
    val_steps = steps(plan.val_rows, size, plan.batch_size, plan.max_steps_per_epoch)
    if plan.input_mode == "memory":
        train_reader = val_reader = contextlib.nullcontext()
        train_ds = _memory_dataset(plan.train_url, plan, columns, rank, size, shuffle=True)
        val_ds = _memory_dataset(plan.val_url, plan, columns, rank, size, shuffle=False)
    else:
        train_reader, train_ds = _dataset(plan.train_url, plan, columns, rank, size,
                                          plan.train_row_groups, shuffle=True)
        val_reader, val_ds = _dataset(plan.val_url, plan, columns, rank, size,
                                      plan.val_row_groups, shuffle=False)

    timer = _callbacks().EpochTimer()
    callbacks: list[keras.callbacks.Callback] = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
        hvd.callbacks.LearningRateWarmupCallback(
            initial_lr=lr, warmup_epochs=plan.warmup_epochs, steps_per_epoch=steps_per_epoch,
            verbose=0,
        ),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=plan.patience,
                                      restore_best_weights=True),
        timer,
    ]
    if plan.lr_decay_patience:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=plan.lr_decay_patience, min_lr=lr / 32))
    checkpointer = None
    if rank == 0:
        checkpointer = _callbacks().Checkpointer(ckpt, plan.checkpoint_dir, history)
        callbacks += [
            checkpointer,
            keras.callbacks.TensorBoard(log_dir=f"{plan.model_dir}/tensorboard",
                                        histogram_freq=0, profile_batch=0, write_graph=False),
        ]
    fail_after = int(os.environ.get(FAIL_AFTER_EPOCH_ENV, "0") or 0)
    if fail_after:
        callbacks.append(_callbacks().FailAfter(fail_after))
    with train_reader, val_reader:
        if initial_epoch == 0:
            # The loss of the starting weights (random, or the parent's when fine-tuning):
            # the reference every epoch's val_loss is read against.
            before = model.evaluate(val_ds, steps=val_steps, verbose=0)
            initial_val_loss = float(hvd.allreduce(tf.constant(before, tf.float32),
                                                   op=hvd.Average, name="initial_val_loss"))
            log.info("val loss before training: %.4f", initial_val_loss)
        else:
            initial_val_loss = state.get("initial_val_loss")
        if checkpointer is not None:
            checkpointer.initial_val_loss = initial_val_loss
        fit = model.fit(
            train_ds, steps_per_epoch=steps_per_epoch, validation_data=val_ds,
            validation_steps=val_steps, epochs=plan.epochs, initial_epoch=initial_epoch,
            callbacks=callbacks, verbose=2 if rank == 0 else 0,
        )
    if checkpointer is not None:
        history = checkpointer.history
    digest = weights_digest(full)
    result = {"rank": rank, "size": size, "digest": digest, "initial_digest": initial_digest,
              "initial_epoch": initial_epoch, "initial_val_loss": initial_val_loss,
              "epochs_run": len(fit.history.get("loss", [])), "host": os.uname().nodename,
              "device": device, "epoch_seconds": timer.seconds, "steps_per_epoch": steps_per_epoch,
              "batch_size": plan.batch_size,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if rank == 0:
        full.save_weights(f"{plan.model_dir}/weights.h5")
        write_json(f"{plan.model_dir}/history.json", history)
        result["history"] = history
    return result


def _callbacks():
    """Keras callbacks of this module (defined lazily: TensorFlow loads in the worker only)."""
    from types import SimpleNamespace

    from tensorflow import keras

    from sales_st.io import write_json

    class Checkpointer(keras.callbacks.Callback):
        """Rank 0: save weights + optimizer state after every epoch, then the resume state."""

        def __init__(self, ckpt, directory: str, history: dict[str, list[float]]):
            super().__init__()
            self.ckpt, self.directory = ckpt, directory
            self.history = {k: list(v) for k, v in history.items()}
            self.initial_val_loss: float | None = None

        def on_epoch_end(self, epoch, logs=None):
            for k, v in (logs or {}).items():
                self.history.setdefault(k, []).append(float(v))
            path = self.ckpt.write(f"{self.directory}/epoch-{epoch + 1:04d}")
            write_json(f"{self.directory}/{CHECKPOINT_STATE}",
                       {"epoch": epoch + 1, "path": path, "history": self.history,
                        "initial_val_loss": self.initial_val_loss})

    class EpochTimer(keras.callbacks.Callback):
        """Wall time of each epoch's training steps (validation excluded)."""

        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self._t0 = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_test_begin(self, logs=None):
            if self._t0:
                self.seconds.append(time.perf_counter() - self._t0)
                self._t0 = 0.0

    class FailAfter(keras.callbacks.Callback):
        def __init__(self, epoch: int):
            super().__init__()
            self.epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 >= self.epoch:
                raise RuntimeError(f"injected failure after epoch {epoch + 1}")

    return SimpleNamespace(Checkpointer=Checkpointer, FailAfter=FailAfter, EpochTimer=EpochTimer)


def main(argv: list[str] | None = None) -> int:
    """``horovodrun -np 2 --gloo python -m sales_st.train PLAN.json``"""
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as fh:
        result = train_worker(TrainPlan.from_json(fh.read()))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
