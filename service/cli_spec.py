"""What ``syncsgd submit``'s flags change in a job spec (a plain dict, validated by the
service, which names the field of any bad value).

Nested settings are written ``key=value`` pairs, comma-separated, each value read as
JSON when it is JSON (numbers, true/false/null) and as a string otherwise::

    --schedule kind=cosine,min_lr=0.001
    --early-stopping patience=3,monitor=val_accuracy
"""

from __future__ import annotations

import json
from typing import Any

import typer


def parse_pairs(text: str, option: str) -> dict[str, Any]:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}``; an empty text is ``{}`` (the defaults)."""
    pairs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r}: expected key=value", param_hint=option)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        pairs[key.strip()] = value
    return pairs


def apply_overrides(spec: dict[str, Any], top: dict[str, Any], optimizer: dict[str, Any],
                    dropout: float | None) -> dict[str, Any]:
    """``spec`` with the flags given (None: not given): ``top`` fields of the job,
    ``optimizer`` fields, and ``dropout`` on every hidden layer of the spec's model."""
    spec = {**spec, **{k: v for k, v in top.items() if v is not None}}
    changes = {k: v for k, v in optimizer.items() if v is not None}
    if changes:
        spec["optimizer"] = {**spec.get("optimizer", {}), **changes}
    if dropout is not None:
        model = spec.get("model") or _default_model()
        layers = [dict(layer) for layer in model.get("layers") or _default_model()["layers"]]
        for layer in layers[:-1]:
            layer["dropout"] = dropout
        spec["model"] = {**model, "layers": layers}
    return spec


def _default_model() -> dict[str, Any]:
    from common.schemas import ModelSpec

    return ModelSpec().model_dump()
