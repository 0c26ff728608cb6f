"""Regenerate the sample files (seeded, so the bytes are stable): python sample_data/generate.py

Each file is one layout that ``xent score`` understands; the README scores every one of them.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
ANIMALS = np.array(["cat", "dog", "bird"])


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _model(rng: np.random.Generator, n: int, k: int, sharpness: float) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated-ish model: labels drawn from a sharpened copy of the predicted distribution."""
    logits = rng.normal(size=(n, k)) * sharpness
    probs = np.round(_softmax(logits), 6)
    probs[:, -1] = 1.0 - probs[:, :-1].sum(axis=1)  # rounded rows still sum to 1
    truth = _softmax(logits * 1.2)
    labels = (truth.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return np.clip(probs, 0.0, 1.0), labels


def main() -> None:
    rng = np.random.default_rng(20261123)
    probs, labels = _model(rng, 300, 3, 1.6)
    wide = {"label": ANIMALS[labels], **{f"p_{c}": probs[:, i] for i, c in enumerate(ANIMALS)}}
    pacsv.write_csv(pa.table(wide), os.path.join(HERE, "animals.csv"))
    listed = pa.table({"label": ANIMALS[labels], "probs": pa.array(list(probs), pa.list_(pa.float64()))})
    pq.write_table(listed, os.path.join(HERE, "animals_list.parquet"))

    n = 2000
    region = rng.choice(["eu", "us", "apac"], size=n, p=[0.5, 0.3, 0.2])
    score = rng.normal(size=n) * 1.5 + np.where(region == "apac", 0.5, 0.0)
    p_churn = np.round(1.0 / (1.0 + np.exp(-(score - 1.0))), 6)
    churned = (rng.random(n) < 1.0 / (1.0 + np.exp(-(score * 1.1 - 1.0)))).astype(np.int64)
    churn = pa.table({
        "customer_id": [f"C{i:05d}" for i in range(n)],
        "region": region,
        "label": churned,
        "p_churn": p_churn,
    })
    pacsv.write_csv(churn, os.path.join(HERE, "churn.csv"))


if __name__ == "__main__":
    main()
