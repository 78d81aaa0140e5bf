"""The driver's epoch lines, read from the checkpoint state rank 0 writes."""

from __future__ import annotations

import json
import logging

from sales_st.training.progress import EpochLogger, clock


def write_state(model_dir, epoch, loss, val_loss):
    ckpt = model_dir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    history = {"loss": loss[:epoch], "val_loss": val_loss[:epoch], "lr": [0.1] * epoch}
    (ckpt / "state.json").write_text(json.dumps({"epoch": epoch, "history": history}))


def lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "sales_st.training.progress"]


def test_one_line_per_new_epoch_and_none_for_a_resumed_runs_old_ones(tmp_path, caplog):
    loss, val = [1.0, 0.5, 0.25, 0.2], [2.0, 1.5, 1.25, 1.2]
    caplog.set_level(logging.INFO, logger="sales_st.training.progress")
    logger = EpochLogger(str(tmp_path), epochs=4, label="m1", interval_s=3600)
    logger.start()  # no state yet: a fresh run
    logger.poll()
    assert lines(caplog) == []
    write_state(tmp_path, 2, loss, val)
    logger.poll()
    logger.poll()  # nothing new: nothing said
    got = lines(caplog)
    assert [g.split(" (")[0] for g in got] == [
        "m1: epoch 1/4: loss 1.0000, val_loss 2.0000",
        "m1: epoch 2/4: loss 0.5000, val_loss 1.5000",
    ]
    assert all("elapsed" in g and "left)" in g for g in got)
    logger.stop()
    caplog.clear()
    # the same training resumed after epoch 2: only its own epochs are reported
    resumed = EpochLogger(str(tmp_path), epochs=4, interval_s=3600)
    resumed.start()
    write_state(tmp_path, 3, loss, val)
    resumed.stop()
    assert [g.split(" (")[0] for g in lines(caplog)] == ["epoch 3/4: loss 0.2500, val_loss 1.2500"]


def test_clock():
    assert (clock(5.4), clock(65), clock(3600)) == ("5s", "1m05s", "60m00s")


def test_listener_gets_every_epoch_once_a_resumed_runs_earlier_ones_first(tmp_path):
    loss, val = [1.0, 0.5, 0.25], [2.0, 1.5, 1.25]
    write_state(tmp_path, 2, loss, val)  # resumed after epoch 2
    got = []
    logger = EpochLogger(
        str(tmp_path), epochs=3, interval_s=3600, listener=lambda h, a, b: got.append((a, b))
    )
    logger.start()
    write_state(tmp_path, 3, loss, val)
    logger.stop()
    assert got == [(0, 2), (2, 3)]
