"""The fused spatio-temporal model: shapes, quantiles, gradients, ablation, freezing."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

from sales_st.config import ModelConfig
from sales_st.features.spec import FeatureSpec, make_layout
from sales_st.model import network
from sales_st.model.network import build_model, encoder_weights, pinball_loss, set_trainable
from sales_st.model.tensors import model_inputs_from_columns, targets_from_columns

L, H, K, B = 14, 7, 3, 5


def fake_spec(history: int = L) -> FeatureSpec:
    layout = make_layout(
        history,
        H,
        K,
        lags=[1],
        rolling_windows=[],
        agg_levels=["state"],
        vocab_names=["store_id", "item_id"],
        static_numeric=["size"],
    )
    return FeatureSpec(
        layout=layout,
        dataset="fake",
        run_date=dt.date(2024, 1, 31),
        t0=dt.date(2023, 1, 1),
        n_days=400,
        aggregate_levels=["state"],
        vocab={"store_id": list("abcde"), "item_id": list("xy")},
        scalers={
            "lag_1": [1.0, 0.5],
            "log_scale": [2.0, 1.0],
            "obs_frac": [0.0, 1.0],
            "log_age": [0.0, 1.0],
            "size": [1.0, 0.2],
        },
        splits={},
        neighbours="",
        features_config="f",
        features_id="f",
    )


def fake_columns(seed: int = 0, n: int = B) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    spec = fake_spec()
    cols = {c: rng.random((n, L)).astype("float32") for c in spec.layout.hist}
    cols.update({c: rng.random((n, H)).astype("float32") for c in spec.layout.fut})
    cols["hist_dow"] = np.tile(np.arange(L) % 7, (n, 1)).astype("int32")
    cols["fut_dow"] = np.tile(np.arange(H) % 7, (n, 1)).astype("int32")
    cols["nbr_y"] = rng.random((n, K * L)).astype("float32")
    cols["nbr_mask"] = np.ones((n, K), "float32")
    cols["nbr_dist"] = rng.random((n, K)).astype("float32") * 50
    cols["nbr_weight"] = np.full((n, K), 1 / K, "float32")
    cols["store_id_idx"] = rng.integers(0, 6, n).astype("int32")
    cols["item_id_idx"] = rng.integers(0, 3, n).astype("int32")
    for c in spec.layout.numeric:
        cols[c] = rng.random(n).astype("float32")
    cols["y"] = rng.random((n, H)).astype("float32") * 10
    cols["y_mask"] = np.ones((n, H), "float32")
    cols["scale"] = np.full(n, 5.0, "float32")
    return cols


def inputs(seed=0, n=B):
    return model_inputs_from_columns(fake_columns(seed, n), fake_spec())


@pytest.mark.parametrize("temporal", ["lstm", "transformer"])
@pytest.mark.parametrize("fusion", ["gate", "concat"])
def test_output_shapes_and_non_crossing_quantiles(temporal, fusion):
    cfg = ModelConfig(
        temporal=temporal,
        fusion=fusion,
        units=16,
        heads=2,
        decoder_units=16,
        quantiles=[0.1, 0.5, 0.9],
    )
    model = build_model(fake_spec(), cfg)
    out = model(inputs(), training=False)
    assert out["quantiles"].shape == (B, H, 3)
    assert out["temporal_attention"].shape == (B, L)
    assert out["spatial_attention"].shape == (B, K + 2)  # neighbours + spatial lag + state
    assert out["gate"].shape == (B,)
    q = out["quantiles"].numpy()
    assert (np.diff(q, axis=-1) >= 0).all()
    np.testing.assert_allclose(out["temporal_attention"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out["spatial_attention"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    g = out["gate"].numpy()
    assert ((g > 0) & (g < 1)).all() if fusion == "gate" else (g == 1).all()


def test_quantiles_never_cross_even_for_extreme_weights():
    cfg = ModelConfig(units=16, heads=2, decoder_units=16, quantiles=[0.05, 0.25, 0.5, 0.75, 0.95])
    model = build_model(fake_spec(), cfg)
    for w in model.get_layer("decoder_q").weights:
        w.assign(tf.random.normal(w.shape, stddev=50.0, seed=1))
    q = model(inputs(3, 64), training=False)["quantiles"].numpy()
    assert (np.diff(q, axis=-1) >= 0).all()


def test_masked_pinball_loss_by_hand():
    loss = pinball_loss([0.1, 0.5, 0.9])
    y_true = tf.constant([[[2.0, 1.0], [5.0, 0.0]]])  # second step masked out
    y_pred = tf.constant([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    # e = 2 - q_pred = [1, 0, -1]: pinball = [0.1*1, 0, (0.9-1)*-1] -> mean 0.0667
    assert float(loss(y_true, y_pred)[0]) == pytest.approx((0.1 + 0.0 + 0.1) / 3, rel=1e-6)


def test_log_space_pinball_loss_by_hand():
    loss = pinball_loss([0.1, 0.5, 0.9], log_offset=1.0)
    e = float(np.e)
    # target e - 1 -> log(e - 1 + 1) = 1; predictions 0, e - 1, e^2 - 1 -> logs 0, 1, 2:
    # errors 1, 0, -1 -> pinball 0.1, 0, 0.1 (as in the scaled case, one unit apart in log)
    y_true = tf.constant([[[e - 1.0, 1.0]]])
    y_pred = tf.constant([[[0.0, e - 1.0, e * e - 1.0]]])
    assert float(loss(y_true, y_pred)[0]) == pytest.approx(0.2 / 3, rel=1e-5)
    # the same absolute miss costs less on a big day than on a small one
    small = loss(tf.constant([[[1.0, 1.0]]]), tf.constant([[[1.5, 1.5, 1.5]]]))
    big = loss(tf.constant([[[10.0, 1.0]]]), tf.constant([[[10.5, 10.5, 10.5]]]))
    assert float(big[0]) < float(small[0]) / 5


def test_relative_squared_point_loss_by_hand():
    """model.point_loss=relative_squared: the middle output pays 2.5 * ((y - p) / y)^2 on days
    with sales (none on a day without), the outer quantiles their pinball terms."""
    loss = pinball_loss([0.1, 0.5, 0.9], point="relative_squared")
    # y = 2, predictions 1, 1.5, 3: p10 0.1 * 1, point 2.5 * (0.5 / 2)^2, p90 0.1 * 1
    y_true = tf.constant([[[2.0, 1.0]]])
    y_pred = tf.constant([[[1.0, 1.5, 3.0]]])
    assert float(loss(y_true, y_pred)[0]) == pytest.approx((0.1 + 0.15625 + 0.1) / 3, rel=1e-6)
    # a day with no sales: the point term is 0, the outer ones stay (e = -1, 0, -3)
    zero = loss(tf.constant([[[0.0, 1.0]]]), tf.constant([[[1.0, 1.5, 3.0]]]))
    assert float(zero[0]) == pytest.approx((0.9 * 1 + 0.0 + 0.1 * 3) / 3, rel=1e-6)
    # in log space the point term is the same relative error (the outer terms are logs)
    logged = pinball_loss([0.1, 0.5, 0.9], log_offset=1.0, point="relative_squared")
    e = float(np.e)
    got = logged(
        tf.constant([[[e - 1.0, 1.0]]]), tf.constant([[[0.0, 0.5 * (e - 1.0), e * e - 1.0]]])
    )
    assert float(got[0]) == pytest.approx((0.1 + 2.5 * 0.25 + 0.1) / 3, rel=1e-5)
    # its best constant point over days y = 1 and y = 2 is E[1/y] / E[1/y^2] = 0.75 / 0.625
    # = 1.2, below the mean 1.5
    ys = tf.constant([[[1.0, 1.0], [2.0, 1.0]]])
    cost = [float(loss(ys, tf.constant([[[0.5, p, 9.0]] * 2]))[0]) for p in (1.1, 1.2, 1.3)]
    assert cost[1] < cost[0] and cost[1] < cost[2]
    with pytest.raises(ValueError, match="point loss"):
        pinball_loss([0.1, 0.5, 0.9], point="squared")


def test_log_space_model_starts_at_the_same_weekday_baseline():
    """With the head's output at zero, both target spaces forecast fut_sw_mean exactly."""
    x = inputs(3, 64)
    outs = []
    for space in ("log", "scaled"):
        cfg = ModelConfig(units=16, heads=2, target_space=space, baseline_skip=True)
        full = build_model(fake_spec(), cfg)
        for w in full.get_layer("decoder_q").weights:
            w.assign(tf.zeros_like(w))
        outs.append(full(x, training=False)["quantiles"].numpy())
    # raw 0 -> median = baseline; the outer quantiles sit softplus(0) away (in log / scaled)
    sw = x["fut"].numpy()[..., fake_spec().layout.fut.index("fut_sw_mean")]
    np.testing.assert_allclose(outs[0][..., 1], sw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs[1][..., 1], sw, rtol=1e-5, atol=1e-5)


def test_gradients_reach_both_encoders():
    cfg = ModelConfig(units=16, heads=2, decoder_units=16)
    full = build_model(fake_spec(), cfg)
    x, y = inputs(), targets_from_columns(fake_columns())
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_mean(pinball_loss(cfg.quantiles)(y, full(x, training=True)["quantiles"]))
    for group in ("temporal", "spatial", "static", "fusion", "decoder"):
        weights = encoder_weights(full, group)
        assert weights, group
        norms = [float(tf.norm(g)) for g in tape.gradient(loss, weights) if g is not None]
        assert norms and max(norms) > 0, group
    del tape


def test_ablation_switch_removes_the_spatial_path():
    spec = fake_spec()
    fused = build_model(spec, ModelConfig(units=16, heads=2, decoder_units=16, spatial=True))
    temporal = build_model(spec, ModelConfig(units=16, heads=2, decoder_units=16, spatial=False))
    assert encoder_weights(fused, "spatial") and not encoder_weights(temporal, "spatial")
    assert not encoder_weights(temporal, "fusion")
    assert temporal.count_params() < fused.count_params()
    # the temporal-only model ignores every region input; the fused one does not
    cols = fake_columns()
    other = dict(
        cols,
        nbr_y=cols["nbr_y"] * 7 + 1,
        hist_spatial_lag=cols["hist_spatial_lag"] + 3,
        hist_agg_state=cols["hist_agg_state"] * 0,
    )
    a = model_inputs_from_columns(cols, spec)
    b = model_inputs_from_columns(other, spec)
    np.testing.assert_allclose(temporal(a)["quantiles"], temporal(b)["quantiles"])
    assert not np.allclose(fused(a)["quantiles"], fused(b)["quantiles"])


def test_pooled_spatial_pass_runs_the_sequence_encoder_once():
    """``model.spatial_pass: pooled``: one call of the sequence encoder instead of two; the
    region context still reaches the output, every encoder group still gets gradients, and
    the temporal attention is the one pass's."""
    spec = fake_spec()
    kw = dict(units=16, heads=2, decoder_units=16)
    tf.keras.utils.set_random_seed(5)
    two = build_model(spec, ModelConfig(**kw))
    one = build_model(spec, ModelConfig(spatial_pass="pooled", **kw))
    assert len(two.get_layer("temporal_encoder").inbound_nodes) == 2
    assert len(one.get_layer("temporal_encoder").inbound_nodes) == 1
    names = {w.name.split("/")[0] for w in encoder_weights(one, "spatial")}
    assert "spatial_fuse" in names and "spatial_inject" not in names
    assert "spatial_inject" in {w.name.split("/")[0] for w in encoder_weights(two, "spatial")}
    cols = fake_columns()
    other = dict(cols, nbr_y=cols["nbr_y"] * 7 + 1, hist_agg_state=cols["hist_agg_state"] * 0)
    a, b = model_inputs_from_columns(cols, spec), model_inputs_from_columns(other, spec)
    out_a, out_b = one(a), one(b)
    assert not np.allclose(out_a["quantiles"], out_b["quantiles"])
    # the region inputs move the spatial path only: the temporal attention is the same
    np.testing.assert_allclose(out_a["temporal_attention"], out_b["temporal_attention"])
    assert not np.allclose(out_a["spatial_attention"], out_b["spatial_attention"])
    y = targets_from_columns(cols)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(pinball_loss([0.1, 0.5, 0.9])(y, one(a, training=True)["quantiles"]))
    groups = ("temporal", "spatial", "static", "fusion", "decoder")
    weights = {g: encoder_weights(one, g) for g in groups}
    grads = tape.gradient(loss, [w for g in groups for w in weights[g]])
    i = 0
    for g in groups:
        norms = [float(tf.norm(x)) for x in grads[i : i + len(weights[g])] if x is not None]
        i += len(weights[g])
        assert norms and max(norms) > 0, g


def test_spatial_pass_days_limit_what_the_second_pass_reads():
    """``model.spatial_pass_days`` P: the spatial pass reads the last P days of the history
    enriched with the region context, the temporal pass all of them, with one set of
    weights; the fused model's attention is 0 before the last P days."""
    P = 4
    spec = fake_spec()
    kw = dict(units=16, heads=2, decoder_units=16)
    tf.keras.utils.set_random_seed(7)
    short = build_model(spec, ModelConfig(spatial_pass_days=P, **kw))
    whole = build_model(spec, ModelConfig(**kw))
    assert short.count_params() == whole.count_params()
    whole.set_weights(short.get_weights())
    assert len(short.get_layer("temporal_encoder").inbound_nodes) == 2
    cols = fake_columns()
    x = model_inputs_from_columns(cols, spec)
    alpha = short(x)["temporal_attention"].numpy()
    assert (alpha[:, : L - P] == 0).all() and (alpha[:, L - P :] > 0).all()
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-5)
    assert (whole(x)["temporal_attention"].numpy() > 0).all()
    assert not np.allclose(short(x)["quantiles"], whole(x)["quantiles"])
    # the first pass still reads every day: a change on the first day moves the forecast
    early = dict(cols, hist_y=cols["hist_y"].copy())
    early["hist_y"][:, 0] += 3.0
    assert not np.allclose(
        short(x)["quantiles"], short(model_inputs_from_columns(early, spec))["quantiles"]
    )
    # with P = all the days it is the default model
    same = build_model(spec, ModelConfig(spatial_pass_days=L, **kw))
    same.set_weights(short.get_weights())
    np.testing.assert_allclose(same(x)["quantiles"], whole(x)["quantiles"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="spatial_pass_days"):
        build_model(spec, ModelConfig(temporal="transformer", spatial_pass_days=P, **kw))


@pytest.mark.parametrize("temporal", ["lstm", "transformer"])
def test_sequence_days_limit_what_the_sequence_encoder_reads(temporal):
    """``model.sequence_days`` S: the temporal-only model ignores the own history before the
    last S days and reads those; the attention is 0 before them and sums to 1 over them; the
    fused model's attention too."""
    S = 5
    spec = fake_spec()
    kw = dict(units=16, heads=2, decoder_units=16, temporal=temporal, sequence_days=S)
    tf.keras.utils.set_random_seed(3)
    temporal_only = build_model(spec, ModelConfig(spatial=False, **kw))
    fused = build_model(spec, ModelConfig(**kw))
    cols = fake_columns()
    early, late = dict(cols), dict(cols)
    for c in ("hist_y", "hist_promo"):
        early[c] = cols[c].copy()
        early[c][:, : L - S] += 3.0  # days the encoder does not read
        late[c] = cols[c].copy()
        late[c][:, L - S] += 3.0  # the first day it reads
    x, x_early, x_late = (model_inputs_from_columns(c, spec) for c in (cols, early, late))
    out = temporal_only(x)
    np.testing.assert_allclose(out["quantiles"], temporal_only(x_early)["quantiles"])
    assert not np.allclose(out["quantiles"], temporal_only(x_late)["quantiles"])
    for model in (temporal_only, fused):
        alpha = model(x)["temporal_attention"].numpy()
        assert alpha.shape == (B, L)
        assert (alpha[:, : L - S] == 0).all() and (alpha[:, L - S :] > 0).all()
        np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-5)
    # the default reads every day
    whole = build_model(spec, ModelConfig(spatial=False, **dict(kw, sequence_days=0)))
    assert not np.allclose(whole(x)["quantiles"], whole(x_early)["quantiles"])


def test_freezing_encoders_by_name():
    full = build_model(fake_spec(), ModelConfig(units=16, heads=2, decoder_units=16))
    before = len(full.trainable_weights)
    frozen = set_trainable(full, ["temporal", "static"])
    assert frozen and all(n.startswith(("temporal_", "static_")) for n in frozen)
    assert not encoder_weights(full, "temporal") and encoder_weights(full, "spatial")
    assert len(full.trainable_weights) < before
    set_trainable(full, [])
    assert len(full.trainable_weights) == before


def test_weights_transfer_to_a_model_of_other_inputs_where_they_fit():
    """A model of other data: another store vocabulary (other size), an item vocabulary of
    the same size but other labels, an extra known-future channel and static attribute."""
    src_spec = fake_spec()
    layout = make_layout(
        L,
        H,
        K,
        lags=[1],
        rolling_windows=[],
        agg_levels=["state"],
        vocab_names=["store_id", "item_id"],
        static_numeric=["size", "area"],
        extra_future=["fut_extra"],
    )
    dst_spec = replace(
        src_spec,
        layout=layout,
        vocab={"store_id": list("abcdef"), "item_id": list("xz")},
        scalers={**src_spec.scalers, "area": [3.0, 1.0]},
    )
    cfg = ModelConfig(units=16, heads=2, decoder_units=16, members=2)
    tf.random.set_seed(1)
    src = build_model(src_spec, cfg)
    tf.random.set_seed(2)
    dst = build_model(dst_spec, cfg)
    before = {path: layer.get_weights() for path, layer in network.named_layers(dst)}
    copied, fresh = network.transfer_weights(src, dst, src_spec, dst_spec)
    theirs = dict(network.named_layers(src))
    for path, layer in network.named_layers(dst):
        if path in copied:
            for a, b in zip(layer.get_weights(), theirs[path].get_weights()):
                np.testing.assert_array_equal(a, b)
        elif path in fresh:
            for a, b in zip(layer.get_weights(), before[path]):
                np.testing.assert_array_equal(a, b)
    short = {p.removeprefix("member_0/") for p in fresh if p.startswith("member_0/")}
    # what reads the new channel, the new attribute or the other vocabularies starts afresh
    assert short == {
        "static_emb_store_id_idx",
        "static_emb_item_id_idx",
        "static_dense",
        "decoder_d1",
    }
    assert len(fresh) == 2 * len(short)  # both members
    assert "member_1/temporal_encoder/temporal_lstm_0" in copied
    assert {"member_0/temporal_in_proj", "member_1/spatial_mha", "member_0/decoder_q"} <= set(
        copied
    )
    # freezing acts on the copied layers only: a fresh layer keeps learning
    frozen = set_trainable(dst, ["decoder", "static"], only=set(copied))
    assert "decoder_d2" in frozen and "decoder_d1" not in frozen and "static_dense" not in frozen
    out = dst(model_inputs_from_columns(fake_columns_for(dst_spec), dst_spec))
    assert np.isfinite(out["quantiles"].numpy()).all()


def fake_columns_for(spec: FeatureSpec) -> dict[str, np.ndarray]:
    cols = fake_columns()
    rng = np.random.default_rng(3)
    for c in spec.layout.fut:
        cols.setdefault(c, rng.random((B, H)).astype("float32"))
    for c in spec.layout.numeric:
        cols.setdefault(c, rng.random(B).astype("float32"))
    return cols


def test_inputs_are_standardised_and_cleaned():
    cols = fake_columns()
    cols["lag_1"] = np.array([1.0, 1.5, np.nan, 0.5, 1.0], "float32")
    cols["store_id_idx"] = np.array([0, 5, 99, 1, 2], "int32")  # 99: unseen id -> clipped
    x = model_inputs_from_columns(cols, fake_spec())
    np.testing.assert_allclose(x["num"][:, 0], [0.0, 1.0, 0.0, -1.0, 0.0])
    assert x["cat"][:, 0].numpy().tolist() == [0, 5, 5, 1, 2]
    assert x["hist"].shape == (B, L, 7) and x["ctx_seq"].shape == (B, 2, L)
    assert x["nbr_y"].shape == (B, K, L)


@pytest.mark.parametrize("temporal", ["lstm", "transformer"])
def test_save_and_load_restore_every_weight_and_the_outputs(tmp_path, temporal):
    """The served model is the trained model: every variable is in the file, a fresh build
    loaded from it gives the same outputs, and the probe check catches one that does not."""
    import h5py

    from sales_st.errors import DataError
    from sales_st.training.store import save_weights, verify_outputs

    cfg = ModelConfig(temporal=temporal, units=16, heads=2, decoder_units=16)
    spec = fake_spec()
    tf.keras.utils.set_random_seed(1)
    trained = build_model(spec, cfg)
    save_weights(trained, spec, str(tmp_path))
    with h5py.File(tmp_path / "weights.h5") as h5:
        saved = sum(len(h5[n].attrs["weight_names"]) for n in h5.attrs["layer_names"])
    assert saved == len(trained.weights)
    tf.keras.utils.set_random_seed(2)  # a different initialisation, overwritten by the load
    served = build_model(spec, cfg)
    served.load_weights(str(tmp_path / "weights.h5"))
    x = inputs(seed=3)
    for name in ("quantiles", "temporal_attention", "spatial_attention", "gate"):
        np.testing.assert_array_equal(served(x)[name].numpy(), trained(x)[name].numpy(), name)
    verify_outputs(served, spec, str(tmp_path))
    tf.keras.utils.set_random_seed(4)
    with pytest.raises(DataError, match="does not reproduce"):
        verify_outputs(build_model(spec, cfg), spec, str(tmp_path))


def test_lead_lag_path_finds_the_leading_neighbour_and_its_lag():
    """Own sales follow neighbour 1's by 5 days: the path puts its weight on (1, lag 5) and
    projects the neighbour's last 5 days onto horizons 1..5; masking the leader moves it."""
    Lh, Hh, Kh, lag = 42, 7, 3, 5
    rng = np.random.default_rng(0)
    days = np.arange(-lag, Lh + Hh)
    shock = np.zeros(len(days))
    for start in (3, 20, 33):  # boxcar shocks of the leader, in window days (+ lag)
        shock[start + lag : start + lag + 8] = rng.choice([-0.6, 0.6])
    weekly = np.array([0.9, 1.0, 1.0, 1.1, 1.2, 1.4, 0.6])[days % 7]
    leader = weekly * np.exp(shock + 0.03 * rng.standard_normal(len(days)))
    own = np.roll(leader, lag)[lag : lag + Lh]  # own at t = leader at t - lag
    leader_hist = leader[lag : lag + Lh]
    noise = [weekly[lag : lag + Lh] * np.exp(0.2 * rng.standard_normal(Lh)) for _ in range(2)]
    nbr = np.stack([noise[0], leader_hist, noise[1]])[None].astype("float32")
    dims = network.InputDims(Lh, Hh, Kh, 7, 1, 1, [], 1)
    cfg = ModelConfig(lead_lag_days=10)
    inp = {"nbr_y": tf.constant(nbr), "nbr_mask": tf.ones((1, Kh))}
    channels, w = network.lead_lag_path(cfg, dims, inp, tf.constant(own[None], tf.float32))
    assert channels.shape == (1, Hh, 3) and w.shape == (1, Kh, 10)
    i, j = np.unravel_index(int(np.argmax(w[0])), (Kh, 10))
    assert (i, j + 1) == (1, lag) and float(w[0, 1, lag - 1]) > 0.5
    assert float(channels[0, 0, 2]) > 0.8  # the chosen leader matched the series so far
    # horizons 1..lag read the leader's residuals of days o + h - lag (all known)
    resid = network.weekday_residuals(tf.constant(leader_hist[None], tf.float32), Lh)[0]
    expected = resid.numpy()[Lh - 1 - (lag - np.arange(1, lag + 1))]
    corr = np.corrcoef(channels[0, :lag, 0].numpy(), expected)[0, 1]
    assert corr > 0.9, (channels[0, :, 0].numpy(), expected)
    masked = {"nbr_y": inp["nbr_y"], "nbr_mask": tf.constant([[1.0, 0.0, 1.0]])}
    _, w2 = network.lead_lag_path(cfg, dims, masked, tf.constant(own[None], tf.float32))
    assert float(tf.reduce_sum(w2[0, 1])) == 0.0


def test_lead_lag_option_trains_saves_and_leaves_the_twin_alone(tmp_path):
    from sales_st.model.tensors import probe_columns
    from sales_st.training.store import save_weights, verify_outputs

    spec = fake_spec(history=28)
    cfg = ModelConfig(units=16, heads=2, decoder_units=16, lead_lag_days=7)
    tf.keras.utils.set_random_seed(1)
    full = build_model(spec, cfg)
    cols = probe_columns(spec, n=4)
    x = model_inputs_from_columns(cols, spec)
    y = tf.stack([tf.random.uniform((4, H)) * 3, tf.ones((4, H))], axis=-1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(pinball_loss(cfg.quantiles)(y, full(x, training=True)["quantiles"]))
    lead = full.get_layer("spatial_lead_scores").trainable_weights
    assert len(lead) == 2 and all(g is not None for g in tape.gradient(loss, lead))
    save_weights(full, spec, str(tmp_path))
    tf.keras.utils.set_random_seed(2)
    served = build_model(spec, cfg)
    served.load_weights(str(tmp_path / "weights.h5"))
    np.testing.assert_array_equal(served(x)["quantiles"].numpy(), full(x)["quantiles"].numpy())
    verify_outputs(served, spec, str(tmp_path))
    # the temporal-only twin of a lead-lag model has no spatial path at all
    twin = build_model(
        spec, ModelConfig(units=16, heads=2, decoder_units=16, spatial=False, lead_lag_days=7)
    )
    assert not encoder_weights(twin, "spatial")
    with pytest.raises(ValueError, match="lead_lag_days"):
        build_model(spec, ModelConfig(units=16, heads=2, lead_lag_days=20))


def test_fusion_gate_bias_sets_the_initial_gate():
    x = inputs()
    for bias, lo, hi in ((0.0, 0.3, 0.7), (-3.0, 0.0, 0.12)):
        cfg = ModelConfig(units=16, heads=2, decoder_units=16, fusion_gate_bias=bias)
        gate = build_model(fake_spec(), cfg)(x)["gate"].numpy()
        assert lo < gate.mean() < hi, (bias, gate.mean())


def test_members_are_averaged_and_each_is_fitted_to_its_own_loss(tmp_path):
    """model.members: M networks in one model.  The forecast is the mean of the members'
    quantiles; the training loss is the mean of each member's own pinball loss, so a
    member's gradient is what it would be alone (over M), whatever the other members say."""
    from sales_st.training.store import save_weights, verify_outputs

    spec = fake_spec()
    cfg = ModelConfig(units=16, heads=2, decoder_units=16, members=2)
    tf.keras.utils.set_random_seed(1)
    full = build_model(spec, cfg)
    x = inputs(seed=3)
    out = full(x)
    m0, m1 = (full.get_layer(f"member_{i}")(x) for i in range(2))
    assert out["member_quantiles"].shape == (B, 2, H, 3)
    assert not np.allclose(m0["quantiles"].numpy(), m1["quantiles"].numpy())  # two inits
    mean = (m0["quantiles"].numpy() + m1["quantiles"].numpy()) / 2
    np.testing.assert_allclose(out["quantiles"].numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(out["gate"].numpy(), (m0["gate"] + m1["gate"]).numpy() / 2)

    y = tf.stack([tf.random.uniform((B, H)) * 3, tf.ones((B, H))], axis=-1)
    loss = pinball_loss(cfg.quantiles, log_offset=1.0)
    w0 = full.get_layer("member_0").trainable_weights
    with tf.GradientTape(persistent=True) as tape:
        o = full(x)
        both = tf.reduce_mean(loss(y, o["member_quantiles"]))
        alone = tf.reduce_mean(loss(y, o["member_quantiles"][:, 0]))
        other = tf.reduce_mean(loss(y, o["member_quantiles"][:, 1]))
    np.testing.assert_allclose(both.numpy(), (alone.numpy() + other.numpy()) / 2, rtol=1e-6)
    for g_both, g_alone in zip(tape.gradient(both, w0), tape.gradient(alone, w0), strict=True):
        g_both, g_alone = tf.convert_to_tensor(g_both), tf.convert_to_tensor(g_alone)
        np.testing.assert_allclose(g_both.numpy(), g_alone.numpy() / 2, rtol=1e-4, atol=1e-7)

    save_weights(full, spec, str(tmp_path))
    tf.keras.utils.set_random_seed(2)
    served = build_model(spec, cfg)
    served.load_weights(str(tmp_path / "weights.h5"))
    np.testing.assert_array_equal(served(x)["quantiles"].numpy(), out["quantiles"].numpy())
    verify_outputs(served, spec, str(tmp_path))
    assert set_trainable(served, ["temporal"]) and not encoder_weights(served, "temporal")


def test_compiled_scoring_call_matches_the_eager_model_for_any_batch_size():
    """The forecast job calls the model as one graph (serving.scoring.compiled_call): same
    outputs as the eager call, traced once for every batch size."""
    from sales_st.serving.scoring import compiled_call

    full = build_model(fake_spec(), ModelConfig(units=16, heads=2, decoder_units=16, members=2))
    call = compiled_call(full)
    for n in (B, 3, 1):
        x = inputs(seed=n, n=n)
        got, want = call(x), full(x, training=False)
        for name in ("quantiles", "temporal_attention", "spatial_attention", "gate"):
            np.testing.assert_allclose(got[name].numpy(), want[name].numpy(), rtol=1e-5, atol=1e-6)
    assert call.experimental_get_tracing_count() == 1


def test_periodic_embedding_by_hand():
    """relu(W_f [sin(2 pi c_f x_f), cos(2 pi c_f x_f)] + b_f) per scalar, flattened."""
    emb = network.PeriodicEmbedding(frequencies=2, dim=3, sigma=1.0)
    x = np.array([[[0.25, 0.5]], [[0.0, 1.0]]], "float32")  # [B=2, H=1, F=2]
    emb(x)
    c = np.array([[1.0, 0.5], [2.0, -1.0]], "float32")
    w = np.arange(2 * 4 * 3, dtype="float32").reshape(2, 4, 3) / 10 - 1.0
    b = np.array([[0.1, -0.2, 0.3], [0.0, 0.5, -3.0]], "float32")
    emb.set_weights([c, w, b])
    want = np.zeros((2, 1, 6), "float32")
    for i in range(2):
        for f in range(2):
            v = 2 * np.pi * x[i, 0, f] * c[f]
            feats = np.concatenate([np.sin(v), np.cos(v)])
            want[i, 0, 3 * f : 3 * f + 3] = np.maximum(feats @ w[f] + b[f], 0)
    np.testing.assert_allclose(emb(x).numpy(), want, rtol=1e-5, atol=1e-6)


def test_periodic_embedding_option_feeds_decoder_and_static_encoder(tmp_path):
    """With ``numeric_embedding: periodic`` a known-future channel and a static number reach
    the output through their embeddings too; the weights save and load like the others."""
    from sales_st.training.store import save_weights, verify_outputs

    cfg = ModelConfig(units=16, heads=2, decoder_units=16, numeric_embedding="periodic")
    spec = fake_spec()
    tf.keras.utils.set_random_seed(1)
    model = build_model(spec, cfg)
    fut_emb, num_emb = model.get_layer("decoder_fut_emb"), model.get_layer("static_num_emb")
    assert fut_emb.c.shape == (len(spec.layout.fut), 8)
    assert num_emb.c.shape == (len(spec.layout.numeric), 8)
    x = inputs(seed=2)
    with tf.GradientTape() as tape:
        q = model(x, training=False)["quantiles"]
    grads = tape.gradient(q, [fut_emb.c, num_emb.c])
    assert all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
    raw = build_model(spec, ModelConfig(units=16, heads=2, decoder_units=16))
    assert len(model.weights) == len(raw.weights) + 6
    save_weights(model, spec, str(tmp_path))
    served = build_model(spec, cfg)
    served.load_weights(str(tmp_path / "weights.h5"))
    np.testing.assert_array_equal(served(x)["quantiles"].numpy(), q.numpy())
    verify_outputs(served, spec, str(tmp_path))


@pytest.mark.parametrize("space", ["log", "scaled"])
def test_covariate_effects_scale_each_series_forecast_by_its_own_coefficients(space):
    """``model.covariate_effects``: every quantile of day o+h multiplied by
    exp(sum_f x_f(o+h) * b_f(s)), b = W s + c from the series' static encoding s; at its
    initial zero weights the model forecasts exactly what it does without the path."""
    spec, x = fake_spec(), inputs(seed=4)
    named = ["fut_promo", "fut_holiday"]
    base = ModelConfig(units=16, heads=2, decoder_units=16, target_space=space, log_offset=0.5)
    tf.keras.utils.set_random_seed(3)
    plain = build_model(spec, base)
    tf.keras.utils.set_random_seed(3)
    model = build_model(spec, replace(base, covariate_effects=named))
    q0 = model(x, training=False)["quantiles"].numpy()
    np.testing.assert_allclose(q0, plain(x, training=False)["quantiles"].numpy(), rtol=1e-6)

    kernel = np.linspace(-0.05, 0.05, 16 * 2, dtype="float32").reshape(16, 2)
    bias = np.array([0.3, -0.2], "float32")
    model.get_layer("decoder_effects").set_weights([kernel, bias])
    q = model(x, training=False)["quantiles"].numpy()
    static = tf.keras.Model(model.inputs, model.get_layer("static_dense").output)
    s = static(x).numpy()  # [B, 16]
    fut = x["fut"].numpy()
    cols = [spec.layout.fut.index(c) for c in named]
    want = np.zeros((B, H), "float32")
    for i in range(B):
        b = s[i] @ kernel + bias  # this series' coefficient per named channel
        for h in range(H):
            want[i, h] = sum(fut[i, h, c] * b[j] for j, c in enumerate(cols))
    if space == "log":  # log(q + c) moves by the effect
        got = np.log(q + 0.5) - np.log(q0 + 0.5)
    else:
        got = np.log(q / q0)
    for k in range(3):
        np.testing.assert_allclose(got[..., k], want, rtol=1e-4, atol=1e-5)
    assert np.abs(want).max() > 0.05  # the check is not trivially about zeros

    with pytest.raises(ValueError, match=r"covariate_effects names \['promo'\]"):
        build_model(spec, replace(base, covariate_effects=["promo"]))


def test_columns_from_arrow_reads_sliced_list_columns_as_2d_arrays():
    import pyarrow as pa

    from sales_st.model.tensors import columns_from_arrow

    batch = pa.RecordBatch.from_pydict(
        {
            "hist_y": pa.array([[1.0, 2.0], [3.0, None], [5.0, 6.0]], pa.list_(pa.float32())),
            "lag_1": pa.array([0.5, None, 1.5], pa.float32()),
            "store_id_idx": pa.array([3, 1, 2], pa.int32()),
        }
    )
    cols = columns_from_arrow(batch.slice(1, 2), ["hist_y", "lag_1", "store_id_idx"])
    np.testing.assert_array_equal(cols["hist_y"], [[3.0, np.nan], [5.0, 6.0]])
    assert cols["hist_y"].dtype == np.float32 and cols["hist_y"].shape == (2, 2)
    np.testing.assert_array_equal(cols["lag_1"], [np.nan, 1.5])
    assert cols["store_id_idx"].tolist() == [1, 2]
    ragged = pa.RecordBatch.from_pydict({"fut_open": pa.array([[1.0], [1.0, 0.0]])})
    with pytest.raises(ValueError, match="fut_open: lists must all have the same length"):
        columns_from_arrow(ragged, ["fut_open"])
    with_null = pa.RecordBatch.from_pydict({"fut_open": pa.array([[1.0], None])})
    with pytest.raises(ValueError, match="fut_open: .*1 null"):
        columns_from_arrow(with_null, ["fut_open"])
