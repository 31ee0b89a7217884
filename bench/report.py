"""``make bench``: every benchmark in one run, side by side with its reference.

Writes ``bench/out/report.json`` (a list of ``{"name", "project", "reference",
"unit", "ratio", "goal"}`` plus the machine) and prints a table. ``ratio`` is
always "how many times better the project is": reference / project for times,
project / reference for rates, so ``ratio >= goal`` means the goal is met.

    python -m bench.report
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import docs
from bench.machine import machine_info

OUT = Path(__file__).resolve().parent / "out" / "report.json"
#: The large net's step should run its GEMMs at the isolated rate; the small one's is
#: bounded by numpy's per-call cost, and its goal is the time against PyTorch.
SHARE_GOALS = {"784-1024-1024-10": 0.85}
ENGINE_GOALS = {"784-1024-1024-10": 1 / 0.9, "64-128-10": 1 / 0.35}  # <= 0.9x, 0.35x torch


def git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False)
    return done.stdout.strip() or None


def run_json(*module_args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", *module_args], capture_output=True,
                          text=True, timeout=3600, check=True)
    text = done.stdout
    result: dict[str, Any] = json.loads(text[text.index("{"):])
    return result


def run_mpiexec_json(module: str, ranks: int = 2) -> dict[str, Any]:
    mpiexec = str(Path(sys.executable).with_name("mpiexec"))
    done = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, "-m", module],
                          capture_output=True, text=True, timeout=3600, check=True)
    result: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{"):])
    return result


def engine_rows(gemms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The engine's rows; each case's GEMMs in the step and alone go into ``gemms``."""
    rows = []
    for result in run_json("bench.engine")["results"]:
        gemms.append({key: result[key] for key in ("net", "batch", "threads", "gemms",
                                                   "non_gemm_share")})
        sizes = result["net"].replace("-", ",")
        torch_step = run_json("bench.torch_step", sizes, str(result["batch"]), "--threads",
                              str(result["threads"]))
        torch_ms = torch_step["step_ms"]
        label = f"engine step {result['net']} batch {result['batch']}, {result['threads']} thr"
        rows.append({"name": label, "project": result["step_ms"], "reference": torch_ms,
                     "unit": "ms", "ratio": torch_ms / result["step_ms"],
                     "goal": ENGINE_GOALS[result["net"]], "reference_is": "PyTorch CPU"})
        # What bounds the step: the GEMMs alone, numpy's library against torch's.
        rows.append({"name": f"{label}: GEMMs alone, numpy vs torch",
                     "project": result["gemm_floor_ms"], "reference": torch_step["gemm_floor_ms"],
                     "unit": "ms", "ratio": torch_step["gemm_floor_ms"] / result["gemm_floor_ms"],
                     "goal": None, "reference_is": "torch.matmul on the same shapes"})
        rows.append({"name": f"{label}: share of numpy's matmul rate",
                     "project": result["step_gflops"], "reference": result["matmul_gflops"],
                     "unit": "GFLOP/s", "ratio": result["share_of_matmul_rate"],
                     "goal": SHARE_GOALS.get(result["net"]),
                     "reference_is": "numpy matmul on the same GEMMs"})
    return rows


def main() -> None:
    gemms: list[dict[str, Any]] = []
    rows = engine_rows(gemms)
    rows += run_json("bench.allreduce")["results"]
    rows += run_json("bench.scaling")["results"]
    deterministic = run_json("bench.deterministic")["results"]
    for row in deterministic:
        row["ratio"] = 1 / row["ratio"]  # as fast as normal mode, as a fraction
        row["goal"] = 1 / 1.10
    rows += deterministic
    rows += run_mpiexec_json("bench.overlap")["results"]
    rows += run_json("bench.end_to_end")["results"]
    rows += run_json("bench.data")["results"]
    startup = run_json("bench.startup")["results"]
    rows += startup
    rows += run_json("bench.recovery")["results"]
    if os.geteuid() == 0 and shutil.which("ip"):  # two nodes in network namespaces
        rows += run_json("bench.recovery_nodes")["results"]
    model = run_json("bench.model")
    rows += model["results"]
    report = {"date": time.strftime("%Y-%m-%d"), "commit": git_commit(),
              "machine": machine_info(), "results": rows,
              "profile_step": run_json("bench.profile_step"), "engine_gemms": gemms,
              "cost_model": {key: model[key] for key in ("calibration", "break_even", "chart")}}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    width = max(len(r["name"]) for r in rows)
    print(f"{'benchmark':<{width}}  {'project':>10}  {'reference':>10}  unit      ratio  goal")
    for r in rows:
        goal = "" if r.get("goal") is None else f"{r['goal']:.2f}"
        met = "" if not goal else ("  ok" if r["ratio"] >= r["goal"] else "  MISSED")
        print(f"{r['name']:<{width}}  {r['project']:>10.4g}  {r['reference']:>10.4g}  "
              f"{r['unit']:<8} {r['ratio']:>6.2f}  {goal}{met}")
    print(f"\nwrote {OUT}")
    docs.main()


if __name__ == "__main__":
    main()
