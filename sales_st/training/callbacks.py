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
