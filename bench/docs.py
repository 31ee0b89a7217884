"""Write ``docs/benchmarks.md`` from ``bench/out/report.json`` (what ``make bench`` wrote).

    python -m bench.docs            # after make bench; make bench runs it too

Every figure on that page comes from the report; the prose around them is here.
``render`` is pure, so a test can check that the page is the report's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "bench" / "out" / "report.json"
PAGE = ROOT / "docs" / "benchmarks.md"

INTRO = """# Benchmarks

`make bench` runs every benchmark in one run, each beside its reference, writes
`bench/out/report.json` and then this page (`python -m bench.docs`): every figure
here comes from that report. It installs the `bench` extra (torch 2.13.0,
`ray[train]` 2.60.0, pyinstrument). `ratio` always reads "times better than the
reference" (reference / project for times, project / reference for rates), so
`ratio >= goal` means the goal is met. Each figure is a median. The machines are
shared and their CPU model changes between sessions, so compare ratios measured
in one run, never absolute figures across runs.
"""

EXPLAINED = """## What each benchmark is

- **engine step**: forward, backward and the SGD update of one MLP in one
  process (`python -m bench.engine`), against the same step in PyTorch in its
  own process (`bench.torch_step`). "GEMMs alone" times only the step's matrix
  products, with numpy's BLAS and with torch's: the floor for either engine.
  "share of numpy's matmul rate" is the step's GEMM FLOPs over its whole time,
  against numpy's rate on the same GEMMs called alone.
- **allreduce**: the project's all-reduce between 2 Ray actors against raw
  mpi4py under `mpiexec` and raw `torch.distributed` gloo (`bench.allreduce`).
- **scaling**: real jobs on the embedded Ray, 1 and 2 workers, steps per
  second after the first chunk, with rank 0's step split (`bench.scaling`);
  with the update replicated on every rank, and sharded (`sharded_update`:
  reduce-scatter, each rank updates its slice, all-gather).
- **deterministic**: the cost of `"deterministic": true` against normal mode,
  in turns in one process, and for 2 workers over MPI (`bench.deterministic`).
- **overlapped buckets**: per-layer `Iallreduce` during backward against one
  flat call, under `mpiexec` with no Ray (`bench.overlap`).
- **end to end**: the whole product (`bench.end_to_end`): from `POST /jobs` of
  the 784-1024-1024-10 MLP (SGD with momentum, global batch 512, 2 workers over
  MPI) to the end of its event stream, against Ray Train's `TorchTrainer` (2
  gloo workers, from `fit()`) and torch DDP (2 processes) on the same model,
  rows, batch split and epochs. Each starts as a user's job would: Ray Train with
  Ray running, both references with the rows in .npy files, and the project with
  its service running (3 s to start its warm processes) and the rows uploaded as a
  dataset. Runs are interleaved, 3 of each.
- **data** (`bench.data`): ingest of a CSV and a Parquet file against pyarrow's
  own read of the same file; training steps per second on the memory-mapped
  layout against the same rows in memory; steps per second with the page cache
  dropped before the run (random reads with the full shuffle, near-sequential
  with the block shuffle); each rank's anonymous memory while 2 workers train;
  the service's peak RSS over an upload, its ingest and a job on it.
- **startup** (`bench.startup`): on a warm service, from `POST /jobs` (digits,
  2 workers) until its first point can be read, with the service's own split
  of that time (the job record's `startup`).
- **cost model** (`bench.model`): a model of the step time calibrated on this
  machine, its error against measured 1, 2 and 3 worker runs, and what it
  predicts for 8 to 512 workers on 10, 25 and 100 Gbit/s networks.
"""

BOUNDS = {
    "engine step 64-128-10": """- **Small net.** The step's GEMMs alone take
  {small_gemm_ms:.3f} ms of its {small_step_ms:.3f} ms; the rest is the fixed cost
  of about 25 numpy calls, each a few microseconds (a bias add, an activation, the
  bias gradients' reduction, the loss, the update's passes). The step is
  {small_vs_torch:.1f}x faster than PyTorch's; to be 1/0.35 faster it would need
  fewer numpy calls, not faster ones.""",
    "engine step 784-1024-1024-10": """- **Large net.** Inside the step the GEMMs run at
  their isolated rate or close to it (the table below), and the update runs a cache-sized
  block at a time, so what is left is the BLAS itself. At 2 threads the step's share of
  the isolated rate is lower than at 1: BLAS splits each GEMM over both cores, while
  numpy's elementwise work (the update, the activations, the bias sums) runs on one.
  Per thread count that missed:
{large_lines}""",
    "scaling": """- **Scaling.** Rank 0's median step split (ms) shows where the time goes:
{scaling_splits}
  Compute at 2 workers takes {two_compute:.1f} ms against half the 1-worker's,
  {half_compute:.1f} (the two cores share one memory bus). What does not shrink at all
  is the exchange, plus, with the update replicated, the update itself:
  every rank updates every parameter. The sharded update halves the update but puts its
  time into the reduce-scatter, the small all-reduce and the all-gather. gloo has no
  reduce-scatter, so over `ray` it costs more than it saves. And 2 ranks on 2 cores leave
  no core for the driver, the service and Ray's own processes: their CPU time lands on
  one rank's step, and the other waits for it at the all-reduce.""",
    "deterministic": """- **Deterministic mode** ({det_ms:.1f} ms a step at the default 4
  micro-shards, against {normal_ms:.1f}). Each micro-shard is its own set of GEMMs (same
  shapes wherever it runs), which costs more than one GEMM over a rank's rows, plus one
  pass per micro-shard to make its gradients whole numbers and add them to a float64 sum
  of every parameter: see [deterministic.md](deterministic.md). Fewer micro-shards cost
  less.""",
    "ingest parquet": """- **Parquet ingest** ({parquet:.0f} MB/s against
  pyarrow's {parquet_ref:.0f}). Decoding Parquet is faster than writing its rows:
  pyarrow's read only decodes, while ingest also writes the layout's float32 rows
  to disk and fsyncs them. The CSV ingest, which parses text, keeps up with
  pyarrow's CSV read.""",
    "end to end": """- **End to end.** The job took {e2e_s:.1f} s: {e2e_steps} steps at
  {e2e_step_ms:.1f} ms ({e2e_steps_s:.1f} s; rank 0's split, its last chunk's mean), a
  start of {e2e_start_s:.2f} s, and {e2e_rest_s:.2f} s for the rest. Both goals would need
  the whole job in {e2e_need_s:.1f} s, {e2e_need_ms:.1f} ms a step with no start and no
  rest. Most of the rest is steps slower than that mean (the 2-worker step varies with
  whatever else runs on the two cores, as under Scaling); then the driver's calls
  between chunks, and at the end the model saved and the workers released.
  `GET /jobs/{{id}}/timeline` shows each step.""",
    "cost model": """- **The cost model.** It keeps the rest of a step (the driver, Python) at its
  1-worker value, and counts the exchange as a ring; the table below shows where each
  run differs.""",
}
BOUNDS_END = """- Other rows can miss in one run and meet their goal in the next (small
  all-reduces, the 2-thread engine step): this machine is shared, and those
  figures move by more than their margins between runs."""


def render(report: dict[str, Any]) -> str:
    """The page, from a report as ``bench.report`` writes it."""
    rows = report["results"]
    parts = [INTRO, _run_line(report), _table(rows), EXPLAINED]
    missed = [r for r in rows if r.get("goal") is not None and r["ratio"] < r["goal"]]
    if missed:
        parts.append(_bounds(rows))
    parts.append(_gemms(report.get("engine_gemms")))
    parts.append(_startup(rows))
    parts.append(_cost_model(report.get("cost_model")))
    parts.append(_profile(report.get("profile_step")))
    return "\n".join(part.rstrip("\n") + "\n" for part in parts if part)


def _run_line(report: dict[str, Any]) -> str:
    m = report["machine"]
    blas = ", ".join(f"{b['api']} {b['version']} ({b['architecture']} kernel)" for b in m["blas"])
    when = f"on {report['date']}" if report.get("date") else "(date not recorded)"
    commit = f" at commit `{report['commit']}`" if report.get("commit") else ""
    cpu = m.get("cpu", "an unrecorded CPU")
    note = f"\n\n{report['note']}" if report.get("note") else ""
    return (f"## This run\n\nMeasured {when}{commit} on {cpu}, {m['cores']} cores, Python "
            f"{m['python']}, numpy {m['numpy']} with {blas}, float32.{note}\n")


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| benchmark | project | reference | unit | ratio | goal |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        goal = "" if r.get("goal") is None else f"{r['goal']:.2f}" + (
            "" if r["ratio"] >= r["goal"] else " (missed)")
        against = f" ({r['reference_is']})" if r.get("reference_is") else ""
        lines.append(f"| {r['name']} | {r['project']:.4g} | {r['reference']:.4g}{against} | "
                     f"{r['unit']} | {r['ratio']:.2f} | {goal} |")
    return "## Results\n\n" + "\n".join(lines) + "\n"


def _bounds(rows: list[dict[str, Any]]) -> str:
    """What bounds each missed goal, for the kinds of rows that missed."""
    missed = [r["name"] for r in rows if r.get("goal") is not None and r["ratio"] < r["goal"]]

    def row(prefix: str) -> dict[str, Any]:
        return next((r for r in rows if r["name"].startswith(prefix)),
                    {"project": 0.0, "reference": 0.0, "ratio": 0.0})

    splits = "\n".join(
        f"  - {r['name'].removeprefix('scaling ')}: "
        + ", ".join(f"{k} {v:.1f}" for k, v in r["step_split_ms"].items())
        for r in rows if "step_split_ms" in r)
    values = {"small_gemm_ms": row("engine step 64-128-10 batch 64, 1 thr: GEMMs alone")["project"],
              "small_step_ms": row("engine step 64-128-10 batch 64, 1 thr")["project"],
              "small_vs_torch": row("engine step 64-128-10 batch 64, 1 thr")["ratio"],
              "det_ms": row("deterministic step, 1 worker, micro_shards=4")["project"],
              "normal_ms": row("deterministic step, 1 worker, micro_shards=4")["reference"],
              "scaling_splits": splits, "parquet": row("ingest parquet")["project"],
              "parquet_ref": row("ingest parquet")["reference"],
              "large_lines": _large_net_lines(rows, missed),
              **_split_values(rows), **_end_to_end_values(rows)}
    bullets = [text.format(**values) for prefix, text in BOUNDS.items()
               if any(name.startswith(prefix) for name in missed)
               and (prefix != "end to end" or values["e2e_s"])]  # older reports: no split
    return ("## What bounds the goals missed in this run\n\n"
            + "\n".join([*bullets, BOUNDS_END]) + "\n")


def _find(rows: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["name"] == name), None)


def _large_net_lines(rows: list[dict[str, Any]], missed: list[str]) -> str:
    """For each thread count whose large-net step missed: the goal against the GEMM floor."""
    lines = []
    for threads in (1, 2):
        name = f"engine step 784-1024-1024-10 batch 512, {threads} thr"
        step, floor = _find(rows, name), _find(rows, f"{name}: GEMMs alone, numpy vs torch")
        if name not in missed or step is None or floor is None:
            continue
        goal, gemms = 0.9 * step["reference"], floor["project"]
        left = ("already more than the goal allows the whole step" if gemms >= goal else
                f"leaving {goal - gemms:.1f} ms for the rest, which takes "
                f"{step['project'] - gemms:.1f}")
        lines.append(f"  - {threads} thread(s): the goal is {goal:.1f} ms (0.9x PyTorch's "
                     f"{step['reference']:.1f}); the step's GEMMs alone take {gemms:.1f} ms with "
                     f"numpy's OpenBLAS ({floor['reference']:.1f} with torch's BLAS), {left}.")
    return "\n".join(lines)


def _split_values(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Rank 0's compute at 1 and 2 workers (MPI), from the scaling rows' splits."""
    one = _find(rows, "scaling 1 worker x 1 thread")
    two = _find(rows, "scaling 2 workers x 1 thread, mpi")
    if one is None or two is None or "step_split_ms" not in two:
        return {"two_compute": 0.0, "half_compute": 0.0}
    return {"two_compute": two["step_split_ms"]["compute"],
            "half_compute": one["step_split_ms"]["compute"] / 2}


def _end_to_end_values(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The job's time, its steps and start, and the time both goals would need."""
    ends = [r for r in rows if r["name"].startswith("end to end") and "job" in r]
    if not ends:
        return dict.fromkeys(("e2e_s", "e2e_steps", "e2e_step_ms", "e2e_steps_s",
                              "e2e_start_s", "e2e_rest_s", "e2e_need_s", "e2e_need_ms"), 0.0)
    job = ends[0]["job"]
    need = min(r["reference"] / r["goal"] for r in ends)
    steps_s = job["steps"] * job["step_ms"] / 1e3
    return {"e2e_s": ends[0]["project"], "e2e_steps": job["steps"],
            "e2e_step_ms": job["step_ms"], "e2e_steps_s": steps_s,
            "e2e_start_s": job["startup_s"],
            "e2e_rest_s": ends[0]["project"] - steps_s - job["startup_s"], "e2e_need_s": need,
            "e2e_need_ms": need / job["steps"] * 1e3}


def _gemms(cases: list[dict[str, Any]] | None) -> str:
    if not cases:
        return ""
    parts = ["## The step's GEMMs, in the step and alone\n\n`bench.engine` times each "
             "`np.matmul` of a step where the step makes it, and the same shapes and "
             "layouts (N: C order, T: a transposed view) alone on fresh operands.\n"]
    for case in cases:
        lines = ["| A | B | layout | ms in the step | GFLOP/s in the step | GFLOP/s alone |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {g['a'][0]}x{g['a'][1]} | {g['b'][0]}x{g['b'][1]} | {g['layout']} | "
                  f"{g['in_step_ms']:.3f} | {g['in_step_gflops']:.1f} | "
                  f"{g['alone_gflops']:.1f} |" for g in case["gemms"]]
        parts.append(f"{case['net']}, batch {case['batch']}, {case['threads']} thread(s); "
                     f"outside the GEMMs: {case['non_gemm_share']:.1%} of the step.\n\n"
                     + "\n".join(lines) + "\n")
    return "\n".join(parts)


def _startup(rows: list[dict[str, Any]]) -> str:
    runs = [r for r in rows if r["name"].startswith("POST /jobs") and "split_s" in r]
    if not runs:
        return ""
    phases = list(runs[0]["split_s"])
    lines = ["| all-reduce | " + " | ".join(phases) + " | client's total |",
             "|---|" + "---|" * (len(phases) + 1)]
    for r in runs:
        lines.append(f"| {r['name'].rsplit(', ', 1)[-1]} | "
                     + " | ".join(f"{r['split_s'][p]:.3f}" for p in phases)
                     + f" | {r['project']:.3f} |")
    return ("## Where a job's start goes\n\nSeconds (medians) from `POST /jobs` to the "
            "first step, by the phases the job record's `startup` reports:\n\n"
            + "\n".join(lines) + "\n")


def _cost_model(model: dict[str, Any] | None) -> str:
    if not model:
        return ""
    c = model["calibration"]
    checks = "\n".join(
        f"| {k['workers']}{' on 2 nodes' if k.get('nodes') else ''} | "
        f"{k['measured_steps_per_s']:.2f} | {k['predicted_steps_per_s']:.2f} | "
        + (f"{k['error']:.1%} |" if k.get("in_model", True)
           else "not modelled: MPI ranks beyond the cores spin and starve each other |")
        for k in c["checks"])
    even = "\n".join(f"| {b['model']} | {b['gbit_s']} | {b['scaling']} | "
                      f"{b['workers_at_50pct_efficiency']} | {b['fastest_at_workers']} | "
                      f"{b['efficiency_at_512']:.0%} |" for b in model["break_even"])
    return (
        "## The cost model\n\n"
        f"Calibrated here: {c['per_sample_s'] * 1e6:.1f} us of compute per sample, "
        f"{c['per_parameter_s'] * 1e9:.2f} ns of update per parameter, "
        f"{c['rest_s'] * 1e3:.2f} ms of other work per step, and an MPI all-reduce between "
        f"2 processes of {c['latency_s'] * 1e6:.1f} us latency and "
        f"{c['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s (the 1-worker run is what it was "
        "calibrated on). Against the measured runs:\n\n"
        "| workers | measured steps/s | predicted | error |\n|---|---|---|---|\n"
        f"{checks}\n\n"
        "Predicted scaling (one core a worker, 10 us network latency), weak (256 samples "
        "a worker a step) and strong (a global batch of 512): the most workers still at "
        "50% efficiency, the workers past which the job gets no faster, and the "
        "efficiency at 512:\n\n"
        "| model | Gbit/s | scaling | workers at >= 50% | fastest at | efficiency at 512 |"
        "\n|---|---|---|---|---|---|\n"
        f"{even}\n\n![predicted scaling efficiency]"
        f"({Path(model['chart']).relative_to('docs')})\n")


def _profile(profile: dict[str, Any] | None) -> str:
    if not profile:
        return ""
    shares = "\n".join(f"| `{name}` | {share:.1%} |"
                       for name, share in profile["share_by_function"].items())
    return (f"## Where the large net's step goes\n\n`python -m bench.profile_step` "
            f"(pyinstrument), {profile['ms_per_step']:.1f} ms a step at 1 thread:\n\n"
            f"| function | share of the step |\n|---|---|\n{shares}\n")


def main() -> None:
    if not REPORT.exists():
        sys.exit(f"{REPORT.relative_to(ROOT)} is missing: run make bench first")
    PAGE.write_text(render(json.loads(REPORT.read_text())))
    print(f"wrote {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
