"""The ``syncsgd`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from common.nn import Network, gradcheck
from common.records import StepRecord
from common.schemas import JobSpec, ModelSpec
from service import runner

app = typer.Typer(help="syncsgd: synchronized data-parallel SGD as a service.",
                  no_args_is_help=True, add_completion=False)
console = Console()


def _read_json(path: Path) -> dict[str, object]:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from exc
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{path}: expected a JSON object")
    return value


@app.command()
def demo(epochs: Annotated[int, typer.Option(min=1, max=1000)] = 30,
         workers: Annotated[int, typer.Option(min=1, max=64)] = 2,
         allreduce: Annotated[str, typer.Option(help="mpi, ray or local")] = "mpi",
         seed: int = 0) -> None:
    """Train the digits MLP (64-128-10) with data-parallel workers on an embedded Ray."""
    spec = JobSpec.model_validate({"name": "digits-mlp", "epochs": epochs, "seed": seed,
                                   "optimizer": {"lr": 0.1, "momentum": 0.9},
                                   "workers": workers, "allreduce": allreduce})
    console.print(f"{spec.name}: {workers} worker(s), all-reduce {allreduce}, "
                  f"{epochs} epochs, global batch {spec.batch_size}")
    epoch_losses: list[float] = []
    last: list[StepRecord] = []

    def report(records: list[StepRecord]) -> None:
        for record in records:
            epoch_losses.append(record.loss)
            if record.val_loss is not None:
                train_loss = sum(epoch_losses) / len(epoch_losses)
                epoch_losses.clear()
                console.print(f"epoch {record.epoch + 1:3d}  train loss {train_loss:.4f}  "
                              f"val loss {record.val_loss:.4f}  "
                              f"val accuracy {record.val_accuracy:.4f}")
        last[:] = records[-1:] or last

    runner.connect(num_cpus=max(workers, 2))
    try:
        result = runner.run_job(spec, on_records=report)
    finally:
        runner.disconnect()
    nodes = ", ".join(f"rank {r.rank} pid {r.pid}" for r in result.ranks)
    console.print(f"{result.steps} steps on {nodes}")
    console.print(f"final validation accuracy: {last[0].val_accuracy:.4f}")


@app.command("gradcheck")
def gradcheck_command(
        spec_file: Annotated[Path, typer.Argument(help="a job spec or model spec (JSON)")],
        samples: Annotated[int, typer.Option(min=1, max=1024)] = 8,
        max_params: Annotated[int, typer.Option(min=1, help="perturb at most this many")] = 2000,
        tolerance: float = 1e-6, seed: int = 0) -> None:
    """Check the engine's gradients for a model against central finite differences."""
    raw = _read_json(spec_file)
    try:
        if "model" in raw:
            job = JobSpec.model_validate(raw)
            net = Network.from_spec(job.model, seed=job.seed, dtype="float64", loss=job.loss)
        else:
            net = Network.from_spec(ModelSpec.model_validate(raw), seed=seed, dtype="float64")
    except ValidationError as exc:
        console.print(f"[red]invalid spec[/red] {spec_file}:\n{exc}")
        raise typer.Exit(2) from exc
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, net.input_dim))
    y = (rng.integers(0, net.output_dim, samples) if net.classifies
         else rng.standard_normal((samples, net.output_dim)))
    result = gradcheck(net, x, y, max_params=max_params, seed=seed)
    table = Table("tensor", "relative error", title=f"gradcheck ({result.checked} parameters)")
    for name, error in result.per_tensor:
        table.add_row(name, f"{error:.2e}")
    console.print(table)
    ok = result.passed(tolerance)
    console.print(f"max relative error {result.max_relative_error:.2e} "
                  f"({'ok' if ok else 'FAILED'}: tolerance {tolerance:.0e})")
    raise typer.Exit(0 if ok else 1)
