"""The references' training loop in PyTorch, shared by torch DDP and Ray Train: each of
``world`` ranks takes its contiguous half of every global batch, DDP averages the
gradients (equal halves: the mean of means is the global mean)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from bench.workload import BATCH, EPOCHS, LR, MOMENTUM, SIZES


def build_model() -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(SIZES):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])  # logits; cross_entropy fuses the softmax


def train(model: torch.nn.Module, x_path: Path, y_path: Path, rank: int, world: int) -> float:
    """Every epoch over the data in order; returns the last step's local loss."""
    torch.set_num_threads(1)
    x = torch.from_numpy(np.load(x_path, mmap_mode="r")[:].copy())
    y = torch.from_numpy(np.load(y_path))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    share = BATCH // world
    loss = torch.zeros(())
    for _ in range(EPOCHS):
        for start in range(0, x.shape[0] - BATCH + 1, BATCH):
            lo = start + rank * share
            optimizer.zero_grad(set_to_none=False)
            loss = torch.nn.functional.cross_entropy(model(x[lo:lo + share]), y[lo:lo + share])
            loss.backward()
            optimizer.step()
    return float(loss)
