"""Reference: one PyTorch CPU training step (forward, backward, SGD with momentum) of the
same MLP, in its own process (OpenBLAS and MKL threads must not share one). Prints JSON.

    python -m bench.torch_step 784,1024,1024,10 512 --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch

from bench.engine import step_gemms
from bench.machine import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", help="e.g. 784,1024,1024,10")
    parser.add_argument("batch", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])  # logits; cross_entropy fuses the softmax
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, sizes[0])
    y = torch.randint(0, sizes[-1], (args.batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    # torch's own GEMM floor on the step's shapes (the same list bench.engine times with
    # numpy): how far a faster GEMM library alone moves the step.
    gemms = [(torch.randn(*a), torch.randn(*b), torch.empty(a[0], b[1]))
             for a, b in step_gemms(sizes, args.batch)]

    def gemms_only() -> None:
        for a, b, out in gemms:
            torch.matmul(a, b, out=out)

    step_s = median_seconds(step, repeat=args.repeat)
    gemm_s = median_seconds(gemms_only, repeat=args.repeat)
    print(json.dumps({"step_ms": step_s * 1e3, "gemm_floor_ms": gemm_s * 1e3,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
