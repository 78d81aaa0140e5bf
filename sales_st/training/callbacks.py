"""Keras callbacks of the Horovod worker: checkpointing with resume state, epoch timing, a
stop on request (a file, e.g. from the tuning job's pruner), and fault injection for the
resume test.

Import this module inside the worker only: it loads TensorFlow.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tensorflow import keras

from sales_st.storage.files import json_exists, write_json
from sales_st.training.progress import clock

log = logging.getLogger(__name__)

CHECKPOINT_STATE = "state.json"


class Checkpointer(keras.callbacks.Callback):
    """Rank 0: save weights + optimizer state after every epoch, then the resume state."""

    def __init__(
        self,
        ckpt: Any,
        directory: str,
        history: dict[str, list[float]],
        initial_val_loss: float | None,
    ):
        super().__init__()
        self.ckpt, self.directory = ckpt, directory
        self.history = {k: list(v) for k, v in history.items()}
        self.initial_val_loss = initial_val_loss

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        path = self.ckpt.write(f"{self.directory}/epoch-{epoch + 1:04d}")
        write_json(
            f"{self.directory}/{CHECKPOINT_STATE}",
            {
                "epoch": epoch + 1,
                "path": path,
                "history": self.history,
                "initial_val_loss": self.initial_val_loss,
            },
        )


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch's training steps (validation excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._t0 = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_test_begin(self, logs: dict[str, float] | None = None) -> None:
        if self._t0:
            self.seconds.append(time.perf_counter() - self._t0)
            self._t0 = 0.0


class EpochProgress(keras.callbacks.Callback):
    """Rank 0: one debug line per epoch -- its losses, its time, the time so far and the time
    left at this pace.  The console's epoch lines come from the driver
    (``sales_st.training.progress``): the ranks' output reaches it only when they finish."""

    def __init__(self, epochs: int, initial_epoch: int, examples: int) -> None:
        super().__init__()
        self.epochs, self.initial_epoch, self.examples = epochs, initial_epoch, examples
        self._start = self._t0 = 0.0

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        now = time.perf_counter()
        elapsed = now - self._start
        left = elapsed / (epoch + 1 - self.initial_epoch) * (self.epochs - epoch - 1)
        losses = ", ".join(
            f"{k} {v:.4f}" for k, v in (logs or {}).items() if k in ("loss", "val_loss")
        )
        log.debug(
            "epoch %d/%d: %s; %d examples in %.0fs (elapsed %s, at most %s left)",
            epoch + 1,
            self.epochs,
            losses,
            self.examples,
            now - self._t0,
            clock(elapsed),
            clock(left),
        )


class StopOnRequest(keras.callbacks.Callback):
    """End the training after an epoch when ``path`` exists (rank 0 looks; every rank learns
    the answer through an allreduce, so all of them stop at the same epoch)."""

    def __init__(self, path: str, hvd: Any):
        super().__init__()
        self.path, self.hvd = path, hvd

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        import tensorflow as tf

        asked = 1.0 if self.hvd.rank() == 0 and json_exists(self.path) else 0.0
        total = self.hvd.allreduce(
            tf.constant(asked, tf.float32), op=self.hvd.Sum, name="stop_requested"
        )
        if float(total) > 0:
            log.info("training stopped on request after epoch %d (%s)", epoch + 1, self.path)
            self.model.stop_training = True


class FailAfter(keras.callbacks.Callback):
    """Raise after the given epoch has been checkpointed (the resume test's injected fault)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if epoch + 1 >= self.epoch:
            raise RuntimeError(f"injected failure after epoch {epoch + 1}")


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the lowest validation loss and leaves them in the
    model when training ends -- also when it ran all its epochs (Keras' own
    ``EarlyStopping(restore_best_weights=True)`` restores them only when it stops early).

    With ``decay`` > 0 it also keeps an exponential moving average of the trainable weights
    over the training steps (Polyak averaging): validation reads the average (swapped in for
    ``on_test_begin`` .. ``on_test_end``), and the best epoch's average is what the model
    keeps.  The average of the last steps forgets the step-to-step noise of the optimiser,
    which otherwise moves the forecasts' level from one epoch to the next.  Its variables
    (:attr:`state`) belong in the training checkpoint, so that a resumed run continues the
    same average.

    ``history`` is the resumed run's earlier history (its ``val_loss``); when an epoch from
    before the resume stays the best, ``restore_epoch(epoch)`` (1-based) must put that
    epoch's checkpoint back (the averaged weights included) -- its weights are not in memory.
    """

    def __init__(
        self,
        model: Any,
        decay: float = 0.0,
        history: dict[str, list[float]] | None = None,
        restore_epoch: Any = None,
    ):
        import tensorflow as tf

        super().__init__()
        self.decay = float(decay)
        self.tracked = list(model.trainable_weights)
        self.state = tf.Module(name="weight_average")
        self.state.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
        self.state.shadow = []
        if self.decay > 0:
            # the average starts short and lengthens to 1 / (1 - decay) steps (num_updates)
            self._ema = tf.train.ExponentialMovingAverage(
                self.decay, num_updates=self.state.updates
            )
            self._ema.apply(self.tracked)  # creates the averages at the current weights
            self.state.shadow = [self._ema.average(w) for w in self.tracked]
            self._update = tf.function(self._update_fn)
        past = list((history or {}).get("val_loss", []))
        self.best_loss = min(past) if past else float("inf")
        self.best_epoch = past.index(self.best_loss) + 1 if past else 0
        self.best_weights: list[Any] | None = None
        self.restore_epoch = restore_epoch
        self._raw: list[Any] | None = None

    def _update_fn(self) -> None:
        self.state.updates.assign_add(1)
        self._ema.apply(self.tracked)

    def _assign(self, values: list[Any]) -> None:
        for w, v in zip(self.tracked, values):
            w.assign(v)

    def averaged(self) -> list[Any]:
        return [s.numpy() for s in self.state.shadow]

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        if self.decay > 0:
            self._update()

    def on_test_begin(self, logs: dict[str, float] | None = None) -> None:
        if self.decay > 0:  # only fit() calls it: the callback is given to nothing else
            self._raw = [w.numpy() for w in self.tracked]
            self._assign(self.averaged())

    def on_test_end(self, logs: dict[str, float] | None = None) -> None:
        if self._raw is not None:
            self._assign(self._raw)
            self._raw = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        val = (logs or {}).get("val_loss")
        if val is not None and float(val) < self.best_loss:
            self.best_loss, self.best_epoch = float(val), epoch + 1
            self.best_weights = (
                self.averaged() if self.decay > 0 else [w.numpy() for w in self.tracked]
            )

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.best_weights is not None:
            self._assign(self.best_weights)
        elif self.best_epoch and self.restore_epoch is not None:
            self.restore_epoch(self.best_epoch)
            if self.decay > 0:
                self._assign(self.averaged())
        elif self.decay > 0:  # no validation loss: the average of the last steps
            self._assign(self.averaged())
        if self.best_epoch:
            log.debug("kept epoch %d's weights (val loss %.5f)", self.best_epoch, self.best_loss)


def average_decay(epochs: float, steps_per_epoch: int) -> float:
    """Per-step decay of the weights' moving average whose time constant is ``epochs``
    epochs (``train.weight_average``; 0 = no average)."""
    if epochs <= 0:
        return 0.0
    return 1.0 - 1.0 / max(1.0, epochs * steps_per_epoch)
