"""The training's progress on the driver's console: one line per epoch, as rank 0
checkpoints it.

The ranks' own output reaches the driver through Horovod only when they finish, so the
driver follows the checkpoint state that rank 0 writes after every epoch
(``<model dir>/checkpoints/state.json``) and logs each new epoch: its losses, the time so far
and the most time left at this pace (early stopping may end the training sooner).  Other
readers of the same epochs (the MLflow run) get them from here, not from a poller of their own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


def clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


# called with the history and the range [start, end) of epochs it has not been given yet
EpochListener = Callable[[dict[str, list[float]], int, int], None]


class EpochLogger:
    """Logs each new epoch of a training's checkpoint state (see the module docstring) and
    hands the epochs to ``listener`` -- all of them, a resumed run's earlier ones included."""

    def __init__(
        self,
        model_dir: str,
        epochs: int,
        label: str = "",
        interval_s: float = 2.0,
        listener: EpochListener | None = None,
    ):
        self.model_dir, self.epochs, self.label = model_dir, epochs, label
        self.listener = listener
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.first: int | None = None  # the epoch already done when the run started
        self.seen = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="epoch-progress", daemon=True)

    def start(self) -> None:
        state = self._state()
        self.first = int(state.get("epoch", 0))  # a resumed run: its own epochs set the pace
        self.seen = self.first
        if self.first and self.listener is not None:
            self.listener(state.get("history", {}), 0, self.first)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self.poll()

    def _loop(self) -> None:
        while not self._done.wait(self.interval_s):
            self.poll()

    def _state(self) -> dict[str, Any]:
        from sales_st.training.worker import read_state

        try:
            return read_state(f"{self.model_dir}/checkpoints") or {}
        except Exception:  # half-written: read it again next time
            return {}

    def poll(self) -> None:
        state = self._state()
        done = int(state.get("epoch", 0))
        if done <= self.seen:
            return
        history = state.get("history", {})
        elapsed = time.monotonic() - self.started
        ran = done - (self.first or 0)
        left = elapsed / ran * (self.epochs - done) if ran > 0 else 0.0
        for epoch in range(self.seen, done):
            losses = ", ".join(
                f"{k} {history[k][epoch]:.4f}"
                for k in ("loss", "val_loss")
                if k in history and epoch < len(history[k])
            )
            log.info(
                "%sepoch %d/%d: %s (elapsed %s, at most %s left)",
                f"{self.label}: " if self.label else "",
                epoch + 1,
                self.epochs,
                losses,
                clock(elapsed),
                clock(left),
            )
        if self.listener is not None:
            self.listener(history, self.seen, done)
        self.seen = done


@contextmanager
def epoch_lines(
    model_dir: str, epochs: int, label: str = "", listener: EpochListener | None = None
) -> Iterator[EpochLogger]:
    """An :class:`EpochLogger` running while the body (the training) runs."""
    logger = EpochLogger(model_dir, epochs, label, listener=listener)
    logger.start()
    try:
        yield logger
    finally:
        logger.stop()
