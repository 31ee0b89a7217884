"""The built-in datasets, written as ordinary layouts so that every job reads its data one way.

``digits``: scikit-learn's bundled 1,797 8x8 digits (no download), raw pixel values 0..16.
``synthetic``: Gaussian inputs labelled by a seeded random one-hidden-layer tanh teacher,
generated in chunks of rows (bounded memory whatever its size); the same spec and seed
give the same bytes. Both land under ``<datasets_dir>/builtin/`` once and are reused.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from common.dataset_files import LayoutWriter, layout_exists, write_layout
from common.schemas import DataSpec, SyntheticSpec

#: Rows generated at a time; part of what defines the synthetic bytes.
SYNTHETIC_CHUNK = 8192
TEACHER_HIDDEN = 64
_lock = threading.Lock()


def default_datasets_dir() -> Path:
    """Where datasets live when no service says otherwise: ``$SYNCSGD_DATASETS_DIR``, else
    ``~/.cache/syncsgd/datasets``."""
    configured = os.environ.get("SYNCSGD_DATASETS_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "syncsgd" / "datasets"


def builtin_dir(spec: DataSpec, seed: int, datasets_dir: Path) -> Path:
    """The layout directory of a built-in dataset (not necessarily written yet)."""
    if spec.dataset == "digits":
        return datasets_dir / "builtin" / "digits-v1"
    syn = spec.synthetic or SyntheticSpec()
    key = hashlib.sha256(f"{syn.model_dump_json()}|{seed}|v1".encode()).hexdigest()[:16]
    return datasets_dir / "builtin" / f"synthetic-{key}"


def materialize(spec: DataSpec, seed: int, datasets_dir: Path) -> Path:
    """Write the built-in dataset ``spec`` names, unless it is there; its directory."""
    directory = builtin_dir(spec, seed, datasets_dir)
    with _lock:  # one writer per process; the rename makes it atomic across processes
        if not layout_exists(directory):
            directory.parent.mkdir(parents=True, exist_ok=True)
            if spec.dataset == "digits":
                _write_digits(directory)
            else:
                _write_synthetic(directory, spec.synthetic or SyntheticSpec(), seed)
    return directory


def _write_digits(directory: Path) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    write_layout(directory, np.asarray(bunch.data, dtype=np.float32),
                 np.asarray(bunch.target, dtype=np.int64),
                 {"name": "digits", "feature_names": [f"pixel_{i}" for i in range(64)],
                  "label": "digit", "content_hash": "sklearn-digits"},
                 labels=True, known_classes=list(range(10)))


def _write_synthetic(directory: Path, spec: SyntheticSpec, seed: int) -> None:
    classify = spec.task == "classification"
    weights = np.random.default_rng((seed, 0x5EED, 1))
    w1 = weights.standard_normal((spec.features, TEACHER_HIDDEN), dtype=np.float32)
    w1 *= np.float32(1 / np.sqrt(spec.features))
    w2 = weights.standard_normal((TEACHER_HIDDEN, spec.outputs), dtype=np.float32)
    writer = LayoutWriter(directory, spec.features, labels=classify, outputs=spec.outputs,
                          known_classes=list(range(spec.outputs)) if classify else None)
    try:
        for chunk, lo in enumerate(range(0, spec.samples, SYNTHETIC_CHUNK)):
            rng = np.random.default_rng((seed, 0x5EED, 2, chunk))
            rows = min(SYNTHETIC_CHUNK, spec.samples - lo)
            x = rng.standard_normal((rows, spec.features), dtype=np.float32)
            scores = np.tanh(x @ w1) @ w2
            if spec.noise:
                scores += np.float32(spec.noise) * rng.standard_normal(scores.shape,
                                                                        dtype=np.float32)
            writer.add(x, scores.argmax(axis=1) if classify else scores)
        writer.finish({"name": "synthetic", "content_hash": f"synthetic-{directory.name}",
                       "feature_names": [f"x{i}" for i in range(spec.features)],
                       "label": None, "stratify": False})
    except BaseException:
        writer.abort()
        raise
