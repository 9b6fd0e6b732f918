"""A small purchase-prediction pipeline: synthetic events → daily features → 7-day training rows →
a logistic regression → metrics on held-out days.

Everything is deterministic: the data is generated from seeds derived from the partition key, and the
partitions are fixed to January 2024 (``end=``), so every machine builds the same values.

    cd examples/ml_pipeline
    assetflow materialize --stale --config config.toml
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

import assetflow as af

daily = af.DailyPartitions(start="2024-01-01", end="2024-02-01")  # 31 partitions, 2024-01-01 .. 2024-01-31

N_USERS = 500
EVENTS_PER_DAY = 2_000
HOLDOUT_DAYS = 7  # the last 7 label days are kept out of training and used for evaluation
EVENT_TYPES = ["view", "add_to_cart", "purchase"]
FEATURES = ["n_events", "n_views", "n_carts", "n_purchases", "revenue", "active_days"]


# --- helpers -------------------------------------------------------------------------------------
# Code versions cover these too: edit one and every asset that calls it becomes `code_changed`.


def _seed_for(key: str) -> int:
    """A seed that is the same on every machine and in every process (unlike Python's hash())."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def _user_traits() -> tuple[np.ndarray, np.ndarray]:
    """Each user's activity weight and purchase propensity; fixed for the whole pipeline."""
    rng = np.random.default_rng(_seed_for("users"))
    activity = rng.gamma(shape=0.8, scale=1.0, size=N_USERS)
    propensity = rng.beta(1.2, 10.0, size=N_USERS)
    return activity / activity.sum(), propensity


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))


def _matrix(table: pa.Table) -> np.ndarray:
    """Feature matrix of training rows: log-scaled counts, one column per name in FEATURES."""
    columns = [np.log1p(table[name].to_numpy().astype(np.float64)) for name in FEATURES]
    return np.column_stack(columns) if columns else np.empty((0, 0))


def _split(training_set: dict[str, pa.Table]) -> tuple[pa.Table, pa.Table]:
    """Train on every label day but the last HOLDOUT_DAYS; hold those out for evaluation."""
    days = sorted(training_set)
    train = [training_set[d] for d in days[:-HOLDOUT_DAYS]]
    test = [training_set[d] for d in days[-HOLDOUT_DAYS:]]
    return pa.concat_tables(train), pa.concat_tables(test)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1.0 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic, with tied scores given their average rank."""
    order = np.argsort(p, kind="mergesort")
    _, first, counts = np.unique(p[order], return_index=True, return_counts=True)
    ranks = np.empty(len(p))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# --- assets --------------------------------------------------------------------------------------


@af.asset(partitions=daily, group="ingest")
def events(ctx: af.Context) -> pa.Table:
    """Synthetic user events for one day: user_id, ts, event, amount (non-zero for purchases)."""
    rng = np.random.default_rng(_seed_for(f"events/{ctx.partition_key}"))
    activity, propensity = _user_traits()
    n = EVENTS_PER_DAY + int(rng.integers(-200, 201))
    users = rng.choice(N_USERS, size=n, p=activity)
    # A purchase is more likely for users with a high propensity; the rest are views and carts.
    p_purchase = propensity[users]
    p_cart = 0.15 * np.ones(n)
    u = rng.random(n)
    kind = np.where(u < p_purchase, 2, np.where(u < p_purchase + p_cart, 1, 0))
    amount = np.where(kind == 2, np.round(rng.lognormal(3.0, 0.6, size=n), 2), 0.0)
    day_start = np.datetime64(ctx.partition_key, "us")
    offsets = np.sort(rng.integers(0, 86_400 * 1_000_000, size=n)).astype("timedelta64[us]")
    ctx.log.info("generated %d events for %s", n, ctx.partition_key)
    return pa.table({
        "user_id": pa.array(users, pa.int64()),
        "ts": pa.array(day_start + offsets, pa.timestamp("us", tz="UTC")),
        "event": pa.array(np.asarray(EVENT_TYPES)[kind]),
        "amount": pa.array(amount, pa.float64()),
    })


@af.asset(partitions=daily, group="features")
def daily_features(events: pa.Table) -> pa.Table:
    """Per-user aggregates of one day's events."""
    event = events["event"]
    flags = events.append_column("is_view", pc.cast(pc.equal(event, "view"), pa.int64())) \
        .append_column("is_cart", pc.cast(pc.equal(event, "add_to_cart"), pa.int64())) \
        .append_column("is_purchase", pc.cast(pc.equal(event, "purchase"), pa.int64()))
    # use_threads=False: a threaded float sum can differ in the last bit from run to run, and a
    # data version is a hash of the exact content, so reproducible values need a fixed order.
    grouped = flags.group_by("user_id", use_threads=False).aggregate([
        ("event", "count"), ("is_view", "sum"), ("is_cart", "sum"), ("is_purchase", "sum"), ("amount", "sum"),
    ])
    grouped = grouped.rename_columns({
        "event_count": "n_events", "is_view_sum": "n_views", "is_cart_sum": "n_carts",
        "is_purchase_sum": "n_purchases", "amount_sum": "revenue",
    })
    return grouped.sort_by("user_id").select(["user_id", "n_events", "n_views", "n_carts", "n_purchases", "revenue"])


@af.check("daily_features", blocking=True)
def daily_features_valid(daily_features: pa.Table):
    """Every row has a user and no count is negative; a failure stops training_set for that day."""
    nulls = daily_features["user_id"].null_count
    negative = sum(pc.sum(pc.less(daily_features[c], 0)).as_py() or 0
                   for c in ("n_events", "n_views", "n_carts", "n_purchases"))
    return nulls == 0 and negative == 0, {"rows": daily_features.num_rows, "null_user_ids": nulls,
                                          "negative_counts": negative}


@af.asset(partitions=daily, group="features", deps={"daily_features": af.Window(start=-6, end=0)})
def training_set(ctx: af.Context, daily_features: dict[str, pa.Table]) -> pa.Table:
    """One row per user active in the 6 days before the label day: features summed over those days,
    label = the user purchased on the label day. Features never see the label day."""
    label_day = ctx.partition_key
    history = [table for day, table in daily_features.items() if day != label_day]
    schema = pa.schema([("day", pa.string()), ("user_id", pa.int64())]
                       + [(name, pa.float64()) for name in FEATURES] + [("label", pa.int64())])
    if not history:
        ctx.log.info("%s: no history before this day, no training rows", label_day)
        return schema.empty_table()
    past = pa.concat_tables(history)
    past = past.append_column("active", pa.array(np.ones(past.num_rows, dtype=np.int64)))
    feats = past.group_by("user_id", use_threads=False).aggregate([
        ("n_events", "sum"), ("n_views", "sum"), ("n_carts", "sum"), ("n_purchases", "sum"),
        ("revenue", "sum"), ("active", "sum"),
    ])
    feats = feats.rename_columns({f"{c}_sum": c for c in ["n_events", "n_views", "n_carts", "n_purchases", "revenue"]}
                                 | {"active_sum": "active_days"})
    today = daily_features[label_day]
    buyers = today.filter(pc.greater(today["n_purchases"], 0)).select(["user_id"])
    buyers = buyers.append_column("label", pa.array(np.ones(buyers.num_rows, dtype=np.int64)))
    rows = feats.join(buyers, "user_id", join_type="left outer").sort_by("user_id")
    rows = rows.set_column(rows.schema.get_field_index("label"), "label", pc.fill_null(rows["label"], 0))
    rows = rows.append_column("day", pa.array([label_day] * rows.num_rows, pa.string()))
    return rows.select(schema.names).cast(schema)


class TrainConfig(BaseModel):
    learning_rate: float = 0.1
    epochs: int = 200
    l2: float = 0.0


@af.asset(group="ml")
def model(training_set: dict[str, pa.Table], config: TrainConfig) -> af.Output:
    """Logistic regression by batch gradient descent on standardized features; JSON weights."""
    train, _ = _split(training_set)
    x = _matrix(train)
    y = train["label"].to_numpy().astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / std
    w = np.zeros(z.shape[1])
    b = 0.0
    for _ in range(config.epochs):
        p = _sigmoid(z @ w + b)
        w -= config.learning_rate * (z.T @ (p - y) / len(y) + config.l2 * w)
        b -= config.learning_rate * float(np.mean(p - y))
    loss = _log_loss(y, _sigmoid(z @ w + b))
    payload = {
        "features": FEATURES, "weights": w.round(10).tolist(), "bias": round(b, 10),
        "mean": mean.round(10).tolist(), "std": std.round(10).tolist(), "config": config.model_dump(),
    }
    value = json.dumps(payload, sort_keys=True).encode()
    return af.Output(value, metadata={"train_rows": len(y), "train_days": len(training_set) - HOLDOUT_DAYS,
                                      "positive_rate": round(float(y.mean()), 4), "train_log_loss": round(loss, 4)})


@af.asset(group="ml")
def evaluation(model: bytes, training_set: dict[str, pa.Table]) -> af.Output:
    """Accuracy, log loss and AUC of the model on the held-out last HOLDOUT_DAYS label days."""
    params = json.loads(model)
    _, test = _split(training_set)
    z = (_matrix(test) - np.asarray(params["mean"])) / np.asarray(params["std"])
    p = _sigmoid(z @ np.asarray(params["weights"]) + params["bias"])
    y = test["label"].to_numpy().astype(np.float64)
    metrics = {
        "rows": float(len(y)),
        "positive_rate": float(y.mean()),
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
        "log_loss": _log_loss(y, p),
        "auc": _auc(y, p),
    }
    table = pa.table({"metric": list(metrics), "value": [round(v, 6) for v in metrics.values()]})
    return af.Output(table, metadata={k: round(v, 4) for k, v in metrics.items()})


defs = af.Definitions(
    assets=[events, daily_features, training_set, model, evaluation],
    checks=[daily_features_valid],
)
