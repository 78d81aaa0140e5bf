"""The fused spatio-temporal forecaster (Keras 2 functional API), built from the feature spec.

    z      = project(own history channels, weekday embedding)          [B, L, d]
    h_t    = M_seq(z)                     temporal-only representation
    h_st   = M_seq(M_spa(z))              spatio-temporal representation
             (model.spatial_pass "pooled": relu(W_f [h_t, pool(M_spa)]), one pass of M_seq)
    y      = gamma * h_st + (1 - gamma) * h_t,  gamma = sigmoid(W [h_t, h_st, s])

``M_seq`` (one set of weights, applied twice) is a stacked LSTM with additive temporal
attention, or a Transformer encoder with attention pooling; with ``model.sequence_days`` S
it reads the last S of the L steps (the bulk of a training step's cost is M_seq's), and its
second application, the spatial pass, with ``model.spatial_pass_days`` P the last P of them.
``M_spa`` attends from the target series (query) to its region context -- the k neighbour
histories with distance encodings, the spatial lag and the hierarchy aggregates -- and adds
to every time step of ``z`` the attention-weighted context sequence plus the pooled context
vector.  The decoder is direct multi-horizon: for each step h it sees the fused vector, the
static encoding, the known-future covariates of day o+h and a horizon embedding, and emits
quantiles that cannot cross (median plus/minus cumulative softplus offsets): levels, or with
``baseline_skip`` corrections to the same-weekday mean of the last weeks.

With ``model.covariate_effects`` naming known-future channels (say ``fut_promo``), each series
gets its own coefficient b_f(s) -- a linear map of its static encoding -- and every quantile
of day o+h is multiplied by exp(sum_f x_f * b_f): a store's own promotion uplift, which the
decoder's sum of inputs can reach only through its hidden layers.

With ``model.members`` M > 1 the model holds M such networks (a seed ensemble): the forecast
is the mean of their quantiles, and each is fitted to its own loss on the same batches.

Layer names carry the encoder they belong to (``temporal_``, ``spatial_``, ``static_``,
``fusion_``, ``decoder_``) so fine-tuning can freeze encoders by name.

With ``model.lead_lag_days`` J > 0 the spatial encoder also reads its neighbours as leading
indicators (:func:`lead_lag_path`): each neighbour's history, shifted by 1..J days, is
correlated with the own history (both as departures from their weekly profile), a softmax
over the (neighbour, lag) pairs picks the best leaders, and their values of j - h days before
the origin -- the leader's past that is the series' future at horizon h when the lag is j --
become three decoder channels per horizon step.  An attention over whole-history tokens
cannot line up a lag; this path measures it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras import layers

from sales_st.config import ModelConfig
from sales_st.features import names as N
from sales_st.features.spec import FeatureSpec

ENCODERS = ("temporal", "spatial", "static", "fusion", "decoder")


@dataclass(frozen=True)
class InputDims:
    history: int
    horizon: int
    k: int
    own: int  # own history channels
    ctx: int  # context sequences (spatial lag + aggregates)
    fut: int
    vocab_sizes: list[int]
    num: int


def input_dims(spec: FeatureSpec) -> InputDims:
    lay = spec.layout
    return InputDims(
        history=lay.history,
        horizon=lay.horizon,
        k=lay.k,
        own=len(lay.own_hist),
        ctx=len(lay.context_hist),
        fut=len(lay.fut),
        vocab_sizes=[spec.vocab_sizes[c] for c in lay.categorical],
        num=len(lay.numeric),
    )


def model_inputs(d: InputDims) -> dict[str, keras.Input]:
    return {
        "hist": keras.Input((d.history, d.own), name="hist"),
        "hist_dow": keras.Input((d.history,), dtype="int32", name="hist_dow"),
        "ctx_seq": keras.Input((max(d.ctx, 1), d.history), name="ctx_seq"),
        "nbr_y": keras.Input((d.k, d.history), name="nbr_y"),
        "nbr_mask": keras.Input((d.k,), name="nbr_mask"),
        "nbr_dist": keras.Input((d.k,), name="nbr_dist"),
        "fut": keras.Input((d.horizon, d.fut), name="fut"),
        "fut_dow": keras.Input((d.horizon,), dtype="int32", name="fut_dow"),
        "cat": keras.Input((len(d.vocab_sizes),), dtype="int32", name="cat"),
        "num": keras.Input((d.num,), name="num"),
    }


class PositionTable(layers.Layer):
    """A learned vector per position (time step, context slot, horizon step), added to a
    ``[B, positions, dim]`` input.

    A layer of its own, called on a model tensor, so that its table is one of the model's
    weights: saved, restored and trained like the others (an ``Embedding`` called on a
    ``tf.range`` constant is not tracked by the functional model and is re-drawn at load).
    """

    def __init__(self, positions: int, dim: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.positions, self.dim = positions, dim

    def build(self, input_shape: Any) -> None:
        self.table = self.add_weight(
            name="table",
            shape=(self.positions, self.dim),
            initializer=keras.initializers.RandomUniform(-0.05, 0.05),
            trainable=True,
        )
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x + self.table[None]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "positions": self.positions, "dim": self.dim}


class PeriodicEmbedding(layers.Layer):
    """Each of the F scalars of ``[..., F]`` through its own periodic embedding:
    ``relu(W_f [sin(2 pi c_f x_f), cos(2 pi c_f x_f)] + b_f)``, with k learned frequencies
    ``c_f`` (initially drawn from N(0, sigma)) and a dense map to ``dim`` per scalar;
    returns ``[..., F * dim]``.  The PLR embedding of Gorishniy et al. (2022): a narrow range
    of one input can get a response of its own without the layers above carving it out of
    a linear input."""

    def __init__(self, frequencies: int, dim: int, sigma: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.frequencies, self.dim, self.sigma = frequencies, dim, sigma

    def build(self, input_shape: Any) -> None:
        f, k = int(input_shape[-1]), self.frequencies
        self.c = self.add_weight(
            name="frequencies",
            shape=(f, k),
            initializer=keras.initializers.RandomNormal(0.0, self.sigma),
            trainable=True,
        )
        self.w = self.add_weight(
            name="kernel",
            shape=(f, 2 * k, self.dim),
            initializer=keras.initializers.GlorotUniform(),
            trainable=True,
        )
        self.b = self.add_weight(name="bias", shape=(f, self.dim), initializer="zeros")
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        v = 2.0 * np.pi * x[..., None] * self.c  # [..., F, k]
        periodic = tf.concat([tf.sin(v), tf.cos(v)], axis=-1)  # [..., F, 2k]
        out = tf.nn.relu(tf.einsum("...fk,fkd->...fd", periodic, self.w) + self.b)
        return tf.reshape(out, [-1, *x.shape[1:-1], x.shape[-1] * self.dim])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "frequencies": self.frequencies,
            "dim": self.dim,
            "sigma": self.sigma,
        }


def scalar_inputs(cfg: ModelConfig, x: tf.Tensor, name: str) -> list[tf.Tensor]:
    """``x`` as the network reads it: raw, plus its periodic embedding when configured."""
    if cfg.numeric_embedding != "periodic" or x.shape[-1] == 0:
        return [x]
    emb = PeriodicEmbedding(
        cfg.numeric_embedding_frequencies,
        cfg.numeric_embedding_dim,
        cfg.numeric_embedding_sigma,
        name=name,
    )(x)
    return [x, emb]


# ---- encoders ----------------------------------------------------------------------------


class SequenceEncoder:
    """M_seq over the last S = ``model.sequence_days`` of ``L`` steps (0: all of them): the
    temporal encoder on the slice, its attention padded with zeros to all ``L`` days.

    The spatial pass reads the last ``spatial_days`` P = ``model.spatial_pass_days`` (0: S)
    with the same weights; P < S needs the LSTM (the Transformer's position table has one
    length)."""

    def __init__(self, cfg: ModelConfig, L: int):
        self.L = L
        self.days = min(cfg.sequence_days or L, L)
        self.spatial_days = min(cfg.spatial_pass_days or self.days, self.days)
        if self.spatial_days < self.days and cfg.temporal != "lstm":
            raise ValueError(
                f"model.spatial_pass_days ({cfg.spatial_pass_days}) below the sequence "
                f"encoder's {self.days} days needs model.temporal: lstm"
            )
        fixed = self.spatial_days == self.days
        self.encoder = temporal_encoder(cfg, self.days if fixed else None)

    def __call__(self, z: tf.Tensor, days: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        days = days or self.days
        if days == self.L:
            return self.encoder(z)
        h, alpha = self.encoder(z[:, self.L - days :, :])
        return h, tf.pad(alpha, [[0, 0], [self.L - days, 0]])


def temporal_encoder(cfg: ModelConfig, L: int | None) -> keras.Model:
    """M_seq: [B, L, d] -> (h [B, d], attention over steps [B, L]); ``L`` None: any length
    (LSTM only)."""
    d = cfg.units
    x_in = keras.Input((L, d), name="temporal_in")
    x = x_in
    if cfg.temporal == "lstm":
        for i in range(cfg.layers):
            x = layers.LSTM(d, return_sequences=True, name=f"temporal_lstm_{i}")(x)
            if cfg.dropout:
                x = layers.Dropout(cfg.dropout, name=f"temporal_drop_{i}")(x)
        last = x[:, -1, :]
        score = layers.Dense(1, name="temporal_att_v")(
            tf.nn.tanh(
                layers.Dense(d, name="temporal_att_w")(x)
                + layers.Dense(d, use_bias=False, name="temporal_att_u")(last)[:, None, :]
            )
        )
    else:
        assert L is not None, "the Transformer encoder has one length"
        x = PositionTable(L, d, name="temporal_pos")(x)
        for i in range(cfg.layers):
            att = layers.MultiHeadAttention(
                cfg.heads, d // cfg.heads, dropout=cfg.dropout, name=f"temporal_mha_{i}"
            )(x, x)
            x = layers.LayerNormalization(name=f"temporal_ln1_{i}")(x + att)
            ff = layers.Dense(2 * d, activation="gelu", name=f"temporal_ff1_{i}")(x)
            ff = layers.Dense(d, name=f"temporal_ff2_{i}")(ff)
            x = layers.LayerNormalization(name=f"temporal_ln2_{i}")(x + ff)
        last = x[:, -1, :]
        score = layers.Dense(1, name="temporal_att_v")(
            tf.nn.tanh(layers.Dense(d, name="temporal_att_w")(x))
        )
    alpha = tf.nn.softmax(score[..., 0], axis=-1)
    context = tf.reduce_sum(alpha[..., None] * x, axis=1)
    h = layers.Dense(d, activation="relu", name="temporal_out")(
        layers.Concatenate(name="temporal_cat")([last, context])
    )
    return keras.Model(x_in, [h, alpha], name="temporal_encoder")


def spatial_context(
    cfg: ModelConfig, dims: InputDims, s: tf.Tensor, inp: dict[str, tf.Tensor]
) -> tuple[tf.Tensor, tf.Tensor]:
    """The attention of M_spa from the target series to its region context: returns (the
    pooled context vector [B, d], attention [B, k + ctx]); zeros for a series without any."""
    d = cfg.units
    seq_proj = layers.Dense(d, name="spatial_seq_proj")  # shared: a history of L -> a token
    nbr_tok = seq_proj(inp["nbr_y"])  # [B, k, d]
    dist = layers.Dense(d, name="spatial_dist")(inp["nbr_dist"][..., None] / 100.0)
    nbr_tok = nbr_tok + dist
    ctx_tok = seq_proj(inp["ctx_seq"])  # [B, ctx, d]
    tokens = PositionTable(dims.k + max(dims.ctx, 1), d, name="spatial_slot")(
        layers.Concatenate(axis=1, name="spatial_tokens")([nbr_tok, ctx_tok])
    )
    ctx_mask = (
        tf.ones_like(inp["ctx_seq"][:, :, 0])
        if dims.ctx
        else tf.zeros_like(inp["ctx_seq"][:, :, 0])
    )
    mask = tf.concat([inp["nbr_mask"], ctx_mask], axis=1)  # [B, k + ctx]
    query = layers.Dense(d, name="spatial_query")(
        layers.Concatenate(name="spatial_qcat")([seq_proj(inp["hist"][..., 0]), s])
    )[:, None, :]
    # Always keep one slot attendable so that a series with no context gets a zero vector.
    any_ctx = tf.cast(tf.reduce_sum(mask, axis=1, keepdims=True) > 0, tf.float32)
    safe_mask = tf.concat([mask[:, :1] + (1 - any_ctx), mask[:, 1:]], axis=1)
    attended, scores = layers.MultiHeadAttention(cfg.heads, d // cfg.heads, name="spatial_mha")(
        query,
        tokens,
        attention_mask=tf.cast(safe_mask[:, None, :] > 0, tf.bool),
        return_attention_scores=True,
    )
    beta = tf.reduce_mean(scores[:, :, 0, :], axis=1) * any_ctx  # [B, k + ctx]
    pooled = attended[:, 0, :] * any_ctx  # [B, d]
    return pooled, beta


def spatial_encoder(
    cfg: ModelConfig, dims: InputDims, z: tf.Tensor, s: tf.Tensor, inp: dict[str, tf.Tensor]
) -> tuple[tf.Tensor, tf.Tensor]:
    """M_spa: returns (z enriched with region context [B, L, d], attention [B, k + ctx])."""
    d = cfg.units
    L = dims.history
    pooled, beta = spatial_context(cfg, dims, s, inp)
    sequences = tf.concat([inp["nbr_y"], inp["ctx_seq"]], axis=1)  # [B, k + ctx, L]
    ctx_series = tf.einsum("bs,bsl->bl", beta, sequences)[..., None]  # [B, L, 1]
    per_step = layers.Concatenate(name="spatial_step_cat")(
        [ctx_series, tf.repeat(pooled[:, None, :], L, axis=1)]
    )
    z_spa = z + layers.Dense(d, name="spatial_inject")(per_step)
    return z_spa, beta


class LeadLagScores(layers.Layer):
    """Softmax weights over (neighbour, lag) pairs from their correlations ``[B, k, J]``:
    a learned temperature times the correlation plus a learned bias per lag; neighbours
    with ``mask`` 0 get no weight."""

    def __init__(self, lags: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.lags = lags

    def build(self, input_shape: Any) -> None:
        self.temperature = self.add_weight(
            name="temperature",
            shape=(),
            initializer=keras.initializers.Constant(10.0),
            trainable=True,
        )
        self.lag_bias = self.add_weight(
            name="lag_bias", shape=(self.lags,), initializer="zeros", trainable=True
        )
        super().build(input_shape)

    def call(self, corr: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        k = tf.shape(corr)[1]
        logits = self.temperature * corr + self.lag_bias[None, None, :]
        logits = logits + (1.0 - mask[:, :, None]) * -1e9
        flat = tf.nn.softmax(tf.reshape(logits, [-1, k * self.lags]), axis=-1)
        return tf.reshape(flat, [-1, k, self.lags])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "lags": self.lags}


def weekday_residuals(y: tf.Tensor, L: int, offset: float = 0.1) -> tf.Tensor:
    """Departures of ``[..., L]`` series from their weekly profile: log(y + c) minus log of
    the window's mean of the same weekday (+ c) on days with y > 0, 0 elsewhere (closed or
    unobserved days say nothing)."""
    same = np.equal.outer(np.arange(L) % 7, np.arange(L) % 7).astype("float32")
    pos = tf.cast(y > 0, tf.float32)
    total = tf.einsum("...u,tu->...t", y * pos, same)
    count = tf.einsum("...u,tu->...t", pos, same)
    mean = total / tf.maximum(count, 1.0)
    return pos * (tf.math.log(tf.maximum(y, 0.0) + offset) - tf.math.log(mean + offset))


def _standardised(x: tf.Tensor) -> tf.Tensor:
    """Zero mean and unit mean square along the last axis (0 for a constant series)."""
    x = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    return x / (tf.sqrt(tf.reduce_mean(x * x, axis=-1, keepdims=True)) + 1e-3)


def lead_lag_path(
    cfg: ModelConfig, dims: InputDims, inp: dict[str, tf.Tensor], own_y: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Neighbours as leading indicators: ``[B, H, 3]`` decoder channels and the weights
    ``[B, k, J]`` of the (neighbour, lag) pairs.

    For each neighbour i and lag j in 1..J, ``corr[i, j]`` is the correlation of the own
    weekday residuals over the last L - J days with the neighbour's, j days earlier.
    :class:`LeadLagScores` turns them into weights w.  Channels per horizon step h:
    the w-weighted neighbour residual of day o + h - j (of day o when j < h: the latest
    known), the weight whose lag covers h (j >= h), and the w-weighted correlation (how
    well the chosen leaders have matched the series so far)."""
    L, H, K, J = dims.history, dims.horizon, dims.k, cfg.lead_lag_days
    if not 1 <= J <= L - 14:
        raise ValueError(
            f"model.lead_lag_days must be between 1 and features.history - 14 = {L - 14}, found {J}"
        )
    r_own = weekday_residuals(own_y, L)  # [B, L]
    r_nbr = weekday_residuals(inp["nbr_y"], L)  # [B, K, L]
    a = _standardised(r_own[:, J:])  # [B, L - J]
    corr = tf.stack(
        [
            tf.einsum("bt,bkt->bk", a, _standardised(r_nbr[:, :, J - j : L - j])) / (L - J)
            for j in range(1, J + 1)
        ],
        axis=-1,
    )  # [B, K, J]
    w = LeadLagScores(J, name="spatial_lead_scores")(corr, inp["nbr_mask"])
    w = w * tf.cast(tf.reduce_sum(inp["nbr_mask"], axis=1) > 0, tf.float32)[:, None, None]
    lag = np.arange(1, J + 1)[:, None]
    step = np.arange(1, H + 1)[None, :]
    index = (L - 1 - np.maximum(lag - step, 0)).reshape(-1)  # day o + h - j, at most o
    values = tf.reshape(tf.gather(r_nbr, index, axis=2), [-1, K, J, H])
    projected = tf.einsum("bkj,bkjh->bh", w, values)
    covered = tf.einsum("bkj,jh->bh", w, (lag >= step).astype("float32"))
    match = tf.reduce_sum(w * corr, axis=[1, 2])
    channels = tf.stack([projected, covered, tf.repeat(match[:, None], H, axis=1)], axis=-1)
    return channels, w


# ---- the model ---------------------------------------------------------------------------


def build_model(spec: FeatureSpec, cfg: ModelConfig) -> keras.Model:
    """The full model; outputs ``quantiles`` [B, H, Q] (scaled units) and explanations.

    With ``model.members`` M > 1 it holds M copies of the network, each initialised
    differently (a seed ensemble in one model): ``quantiles`` is the mean of the members'
    quantiles (and the explanations the mean of theirs), and ``member_quantiles``
    [B, M, H, Q] keeps them apart for training, where each member is fitted to its own loss
    (:func:`pinball_loss`), so the members learn independently from the same batches."""
    if cfg.members <= 1:
        return _network(spec, cfg, "st_forecaster")
    inp = model_inputs(input_dims(spec))
    outs = [_network(spec, cfg, f"member_{i}")(inp) for i in range(cfg.members)]
    stacked = tf.stack([o["quantiles"] for o in outs], axis=1)
    outputs = {"quantiles": tf.reduce_mean(stacked, axis=1), "member_quantiles": stacked}
    for name in ("temporal_attention", "spatial_attention", "gate"):
        outputs[name] = tf.add_n([o[name] for o in outs]) / float(cfg.members)
    return keras.Model(inp, outputs, name="st_forecaster")


def _network(spec: FeatureSpec, cfg: ModelConfig, name: str) -> keras.Model:
    """One member: the network of the module docstring."""
    dims = input_dims(spec)
    d = cfg.units
    inp = model_inputs(dims)
    e = cfg.embedding_dim

    # static encoder
    embs = [
        layers.Embedding(size, e, name=f"static_emb_{column}")(inp["cat"][:, i])
        for i, (column, size) in enumerate(zip(spec.layout.categorical, dims.vocab_sizes))
    ]
    s = layers.Dense(d, activation="relu", name="static_dense")(
        layers.Concatenate(name="static_cat")(
            embs + scalar_inputs(cfg, inp["num"], "static_num_emb")
        )
    )

    dow = layers.Embedding(7, 4, name="temporal_dow")
    z = layers.Dense(d, name="temporal_in_proj")(
        layers.Concatenate(name="temporal_in_cat")([inp["hist"], dow(inp["hist_dow"])])
    )
    m_seq = SequenceEncoder(cfg, dims.history)
    h_t, alpha_t = m_seq(z)
    lead: list[tf.Tensor] = []
    if cfg.spatial:
        if cfg.spatial_pass == "sequence":
            z_spa, beta = spatial_encoder(cfg, dims, z, s, inp)
        else:
            pooled, beta = spatial_context(cfg, dims, s, inp)
        if cfg.lead_lag_days:
            own_y = inp["hist"][..., spec.layout.own_hist.index("hist_y")]
            lead = [lead_lag_path(cfg, dims, inp, own_y)[0]]
        if cfg.spatial_pass == "sequence":
            h_st, alpha_st = m_seq(z_spa, m_seq.spatial_days)
        else:  # one pass of M_seq: the region context joins its output
            h_st = layers.Dense(d, activation="relu", name="spatial_fuse")(
                layers.Concatenate(name="spatial_fuse_cat")([h_t, pooled])
            )
            alpha_st = alpha_t
        if cfg.fusion == "gate":
            gamma = layers.Dense(
                d,
                activation="sigmoid",
                bias_initializer=keras.initializers.Constant(cfg.fusion_gate_bias),
                name="fusion_gate",
            )(layers.Concatenate(name="fusion_cat")([h_t, h_st, s]))
            h = gamma * h_st + (1.0 - gamma) * h_t
            gate = tf.reduce_mean(gamma, axis=-1)
        else:
            h = layers.Dense(d, activation="relu", name="fusion_dense")(
                layers.Concatenate(name="fusion_cat")([h_t, h_st])
            )
            gate = tf.ones_like(h[:, 0])
        alpha = alpha_st
    else:
        h, alpha, gate = h_t, alpha_t, tf.zeros_like(h_t[:, 0])
        beta = tf.zeros_like(inp["nbr_mask"][:, :0])

    # decoder
    H = dims.horizon
    step = PositionTable(H, 8, name="decoder_step")(tf.zeros_like(inp["fut"][..., :8]))
    dec_in = layers.Concatenate(name="decoder_cat")(
        [
            *scalar_inputs(cfg, inp["fut"], "decoder_fut_emb"),
            dow(inp["fut_dow"]),
            step,
            tf.repeat(h[:, None, :], H, axis=1),
            tf.repeat(s[:, None, :], H, axis=1),
            *lead,
        ]
    )
    x = layers.Dense(cfg.decoder_units, activation="relu", name="decoder_d1")(dec_in)
    if cfg.decoder_dropout:
        x = layers.Dropout(cfg.decoder_dropout, name="decoder_drop_1")(x)
    x = layers.Dense(cfg.decoder_units, activation="relu", name="decoder_d2")(x)
    if cfg.decoder_dropout:
        x = layers.Dropout(cfg.decoder_dropout, name="decoder_drop_2")(x)
    raw = layers.Dense(len(cfg.quantiles), name="decoder_q")(x)
    quantiles = monotone_quantiles(raw, cfg.quantiles)
    fut_names = spec.layout.fut
    effect = covariate_effect(cfg, fut_names, inp["fut"], s)
    skip = None
    if cfg.baseline_skip and N.SW_MEAN in fut_names:
        i = fut_names.index(N.SW_MEAN)
        skip = inp["fut"][..., i : i + 1]
    if cfg.target_space == "log":  # the head works in log(y / scale + c)
        c = cfg.log_offset
        if effect is not None:  # log(y + c) moves by the effect: y + c is multiplied
            quantiles = quantiles + effect
        if skip is not None:
            quantiles = quantiles + tf.math.log(tf.maximum(skip, 0.0) + c)
        # capped at e^20 times the series' scale: keeps a diverging head finite (and ordered)
        quantiles = tf.exp(tf.minimum(quantiles, 20.0)) - c
    else:
        if effect is not None:
            quantiles = quantiles * tf.exp(tf.minimum(effect, 20.0))
        if skip is not None:
            quantiles = quantiles + skip
    outputs = {
        "quantiles": quantiles,
        "temporal_attention": alpha,
        "spatial_attention": beta,
        "gate": gate,
    }
    return keras.Model(inp, outputs, name=name)


def covariate_effect(
    cfg: ModelConfig, fut_names: list[str], fut: tf.Tensor, s: tf.Tensor
) -> tf.Tensor | None:
    """``model.covariate_effects``: ``[B, H, 1]`` = sum over the named known-future channels
    f of x_f(o + h) * b_f(s), each series' own coefficient b_f a linear map of its static
    encoding, initially 0 (the model starts as without the path); None when none is named."""
    if not cfg.covariate_effects:
        return None
    unknown = [c for c in cfg.covariate_effects if c not in fut_names]
    if unknown:
        raise ValueError(
            f"model.covariate_effects names {unknown}, not known-future channels of the "
            f"example table: {fut_names}"
        )
    index = [fut_names.index(c) for c in cfg.covariate_effects]
    x = tf.gather(fut, index, axis=-1)  # [B, H, F]
    b = layers.Dense(len(index), kernel_initializer="zeros", name="decoder_effects")(s)
    return tf.einsum("bhf,bf->bh", x, b)[..., None]


def training_output(cfg: ModelConfig) -> str:
    """The output the training loss reads: each member's quantiles when there are several."""
    return "member_quantiles" if cfg.members > 1 else "quantiles"


def monotone_quantiles(raw: tf.Tensor, quantiles: list[float]) -> tf.Tensor:
    """Median from its own unit; lower/upper quantiles at cumulative softplus distances."""
    qs = sorted(quantiles)
    mid = qs.index(0.5)
    median = raw[..., mid : mid + 1]
    below = tf.nn.softplus(raw[..., :mid])
    above = tf.nn.softplus(raw[..., mid + 1 :])
    lower = median - tf.reverse(tf.cumsum(tf.reverse(below, [-1]), axis=-1), [-1])
    upper = median + tf.cumsum(above, axis=-1)
    return tf.concat([lower, median, upper], axis=-1)


def pinball_loss(quantiles: list[float], log_offset: float | None = None, point: str = "pinball"):
    """Masked pinball loss; ``y_true`` is [B, H, 2] = (scaled target, mask).  With
    ``log_offset`` c, on log(y + c) and log(prediction + c) (see ``target_space``).

    ``point="relative_squared"`` (``model.point_loss``): the middle output's term is
    ``2.5 * ((y - p) / y) ** 2`` instead of its pinball term, on the days with ``y > 0`` --
    the squared relative error RMSPE averages, so that output learns RMSPE's best point
    E[1/y] / E[1/y^2], a little below the median (2.5: at a 10% error its gradient equals
    the log-space pinball's).  The other quantiles keep their pinball terms.

    ``y_pred`` is [B, H, Q], or [B, M, H, Q] for the M members of an ensemble: then the
    loss is the mean of the members' own losses, so no member's gradient depends on
    another's output (they are not fitted as one averaged model)."""
    qs = sorted(quantiles)
    q = tf.constant(qs, dtype=tf.float32)
    mid = qs.index(0.5)
    relative = point == "relative_squared"
    if point not in ("pinball", "relative_squared"):
        raise ValueError(f"point loss {point!r}: expected pinball or relative_squared")

    def loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        members = y_pred.shape.rank == 4
        if members:
            y_true = y_true[:, None]
        y, mask = y_true[..., :1], y_true[..., 1]
        raw_y, raw_pred = y, y_pred
        if log_offset is not None:
            c = log_offset
            y = tf.math.log(tf.maximum(y, 0.0) + c)
            y_pred = tf.math.log(tf.maximum(y_pred + c, 1e-6))
        err = y - y_pred  # [B, H, Q]
        pin = tf.maximum(q * err, (q - 1.0) * err)
        if relative:
            pos = tf.cast(raw_y[..., 0] > 0, tf.float32)
            rel = (raw_y[..., 0] - raw_pred[..., mid]) / tf.maximum(raw_y[..., 0], 1e-6)
            point_term = 2.5 * tf.square(rel) * pos
            pin = tf.concat([pin[..., :mid], point_term[..., None], pin[..., mid + 1 :]], -1)
        pin = tf.reduce_mean(pin, axis=-1)
        per = tf.reduce_sum(pin * mask, axis=-1) / tf.maximum(tf.reduce_sum(mask, axis=-1), 1.0)
        return tf.reduce_mean(per, axis=-1) if members else per

    loss.__name__ = "pinball"
    return loss


def model_loss(cfg: ModelConfig):
    """The training loss of a model of ``cfg`` (:func:`pinball_loss` in its target space)."""
    log_offset = cfg.log_offset if cfg.target_space == "log" else None
    return pinball_loss(cfg.quantiles, log_offset, cfg.point_loss)


def set_trainable(model: keras.Model, frozen: list[str], only: set[str] | None = None) -> list[str]:
    """Freeze the layers of the named encoders -- with ``only``, those of them whose path
    (:func:`named_layers`) is in it; returns the names of frozen layers."""
    names = []
    for path, layer in named_layers(model):
        group = layer.name.split("_", 1)[0]
        if group in ENCODERS:
            freeze = group in frozen and (only is None or path in only)
            layer.trainable = not freeze
            if freeze:
                names.append(layer.name)
    return names


def named_layers(model: keras.Model, prefix: str = ""):
    """(path, layer) for every layer inside ``model``, nested models opened; the path names
    the enclosing networks, e.g. ``member_1/temporal_encoder/temporal_lstm_0``."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from named_layers(layer, f"{prefix}{layer.name}/")
        else:
            yield f"{prefix}{layer.name}", layer


def _all_layers(model: keras.Model):
    for _, layer in named_layers(model):
        yield layer


def transfer_weights(
    src: keras.Model, dst: keras.Model, src_spec: FeatureSpec, dst_spec: FeatureSpec
) -> tuple[list[str], list[str]]:
    """Copy into ``dst`` every layer of ``src`` that fits: same path, same weight shapes, and
    for a categorical embedding (``static_emb_<column>``) the same vocabulary, value for
    value -- an index means another store or label on other data.  Returns the paths of the
    layers with weights that were (copied, left as initialised): a model pre-trained on one
    data set starts another whose inputs differ (other covariates, vocabularies, window
    lengths) from every part that does not depend on them."""
    theirs = {path: layer for path, layer in named_layers(src) if layer.weights}
    copied, fresh = [], []
    for path, layer in named_layers(dst):
        if not layer.weights:
            continue
        other = theirs.get(path)
        fits = other is not None and [w.shape for w in other.weights] == [
            w.shape for w in layer.weights
        ]
        if fits and layer.name.startswith("static_emb_"):
            column = N.vocab_name(layer.name[len("static_emb_") :])
            fits = src_spec.vocab.get(column) == dst_spec.vocab.get(column)
        if fits and other is not None:
            layer.set_weights(other.get_weights())
            copied.append(path)
        else:
            fresh.append(path)
    return copied, fresh


def encoder_weights(model: keras.Model, group: str) -> list[tf.Variable]:
    return [
        w
        for layer in _all_layers(model)
        if layer.name.startswith(group + "_")
        for w in layer.trainable_weights
    ]
