"""Where one engine step's time goes: pyinstrument over ``--steps`` training steps of the
784-1024-1024-10 MLP at batch 512, 1 BLAS thread. numpy's C calls are charged to the
engine line that made them, so the profile reads as GEMMs, elementwise work and the
update. Prints the profile on stderr, and JSON of the share per engine function.

    python -m bench.profile_step [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from typing import Any

import numpy as np
from pyinstrument import Profiler
from threadpoolctl import threadpool_limits

from bench.engine import model
from common.nn import Network, make_optimizer
from common.schemas import OptimizerSpec


def function_shares(frame: Any, shares: dict[str, float]) -> None:
    """Time of each innermost engine function (common/nn/...), C calls below included."""
    if "common/nn/" in (frame.file_path or "") and not any(
            "common/nn/" in (child.file_path or "") for child in frame.children):
        shares[f"{frame.file_path.split('common/nn/')[1]}:{frame.line_no} "
               f"{frame.function}"] += frame.time
        return
    for child in frame.children:
        function_shares(child, shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    net = Network.from_spec(model([784, 1024, 1024, 10]))
    optimizer = make_optimizer(OptimizerSpec(lr=0.01, momentum=0.9), net.num_parameters,
                               net.dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 784)).astype(np.float32)
    y = rng.integers(0, 10, 512)
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(3):  # warm up: buffers sized, pages touched
            net.compute_gradients(x, y)
            optimizer.step(net.params, net.grads, 0.01)
        profiler = Profiler(interval=0.0005)
        with profiler:
            for _ in range(args.steps):
                net.compute_gradients(x, y)
                optimizer.step(net.params, net.grads, 0.01)
    print(profiler.output_text(color=False, short_mode=True), file=sys.stderr)
    session = profiler.last_session
    assert session is not None
    shares: dict[str, float] = defaultdict(float)
    root = session.root_frame()
    assert root is not None
    function_shares(root, shares)
    total = root.time
    print(json.dumps({"benchmark": "profile_step", "ms_per_step": total / args.steps * 1e3,
                      "share_by_function": {k: round(v / total, 4) for k, v in
                                        sorted(shares.items(), key=lambda kv: -kv[1])}},
                     indent=2))


if __name__ == "__main__":
    main()
