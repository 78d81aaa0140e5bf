"""The training callbacks that decide which weights a model keeps: the best validation
epoch's, and the moving average of the weights over the steps (``train.weight_average``)."""

from __future__ import annotations

import numpy as np
from tensorflow import keras

from sales_st.training.callbacks import BestWeights, average_decay

# y = w * x, one weight from 0, plain SGD: training pulls w towards 2, while the validation
# data's slope is 1.2, so the validation loss falls until w passes 1.2 and then rises.
X = np.ones((8, 1), np.float32)
Y_TRAIN, Y_VAL = 2.0 * X, 1.2 * X


def one_weight_model() -> keras.Model:
    inp = keras.Input((1,))
    out = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")(inp)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.legacy.SGD(0.1), loss="mse")
    return model


class Record(keras.callbacks.Callback):
    """The raw weight after every step and at every epoch end."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[float] = []
        self.epochs: list[float] = []

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.steps.append(float(self.model.weights[0].numpy()[0, 0]))

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.epochs.append(float(self.model.weights[0].numpy()[0, 0]))


def fit(model, callbacks, epochs=6, batch=4):
    return model.fit(
        X,
        Y_TRAIN,
        validation_data=(X, Y_VAL),
        epochs=epochs,
        batch_size=batch,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )


def test_the_model_keeps_its_best_epoch_also_after_the_last():
    model, rec = one_weight_model(), Record()
    best = BestWeights(model)
    hist = fit(model, [rec, best])
    val = hist.history["val_loss"]
    # by hand: each step w += 0.1 * 2 * (2 - w) = 0.2 * (2 - w); 2 steps per epoch
    w, expected = 0.0, []
    for _ in range(6):
        for _ in range(2):
            w += 0.2 * (2.0 - w)
        expected.append(w)
    np.testing.assert_allclose(rec.epochs, expected, rtol=1e-5)
    np.testing.assert_allclose(val, [(e - 1.2) ** 2 for e in expected], rtol=1e-4)
    b = int(np.argmin(val))
    assert 0 < b < len(val) - 1  # the last epoch is not the best: the test can tell
    assert best.best_epoch == b + 1
    assert float(model.weights[0].numpy()[0, 0]) == rec.epochs[b]  # exactly that epoch's


def test_validation_and_the_kept_model_read_the_moving_average():
    model, rec = one_weight_model(), Record()
    decay = 0.5
    best = BestWeights(model, decay=decay)
    hist = fit(model, [rec, best], epochs=4, batch=2)  # 4 steps per epoch
    # by hand: the average starts at the initial weight (0) and after step n moves with
    # d = min(decay, (1 + n) / (10 + n))
    s, shadows = 0.0, []
    for n, w in enumerate(rec.steps, start=1):
        d = min(decay, (1 + n) / (10 + n))
        s = d * s + (1 - d) * w
        shadows.append(s)
    at_epoch_end = shadows[3::4]
    np.testing.assert_allclose(
        hist.history["val_loss"], [(s - 1.2) ** 2 for s in at_epoch_end], rtol=1e-4
    )
    # after each validation the raw weights came back: training went on from them
    w, raw = 0.0, []
    for _ in rec.steps:
        w += 0.2 * (2.0 - w)
        raw.append(w)
    np.testing.assert_allclose(rec.steps, raw, rtol=1e-5)
    b = int(np.argmin(hist.history["val_loss"]))
    assert best.best_epoch == b + 1
    np.testing.assert_allclose(model.weights[0].numpy()[0, 0], at_epoch_end[b], rtol=1e-5)


def test_the_decay_follows_the_time_constant_in_epochs():
    assert average_decay(0, 100) == 0.0
    assert average_decay(0.5, 200) == 1.0 - 1.0 / 100
    assert average_decay(1.0, 1) == 0.0  # one step long: no averaging


def test_a_resumed_run_whose_best_epoch_came_before_the_resume_reads_it_back():
    model, rec = one_weight_model(), Record()
    restored = []

    def restore_epoch(epoch: int) -> None:  # the worker reads the epoch's checkpoint here
        restored.append(epoch)
        model.weights[0].assign([[1.25]])

    # epochs 1 and 2 ran before the resume; epoch 2's validation loss beats any to come
    best = BestWeights(model, history={"val_loss": [0.5, 1e-9]}, restore_epoch=restore_epoch)
    fit(model, [rec, best], epochs=3)
    assert restored == [2] and best.best_epoch == 2
    assert float(model.weights[0].numpy()[0, 0]) == 1.25
