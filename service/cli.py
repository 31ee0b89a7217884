"""The ``syncsgd`` command line. Every command but ``serve`` and ``gradcheck`` speaks HTTP.

    syncsgd serve                      # the service, on the embedded default
    syncsgd submit job.json --follow   # queue a job and watch its loss
    syncsgd demo                       # all of it, end to end, on a temporary service
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import numpy as np
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common.errors import FieldError
from common.nn import Network, gradcheck
from common.records import StepRecord
from common.schemas import DatasetPublic, DatasetState, JobSpec, JobState, ModelSpec
from service import logs
from service.accounts import Accounts
from service.audit import AuditLog
from service.cli_spec import apply_overrides, parse_pairs
from service.client import ApiError, Client, PointsEvent, StateEvent, StragglerEvent
from service.config import Settings
from service.local import local_service

app = typer.Typer(help="syncsgd: synchronized data-parallel SGD as a service.",
                  no_args_is_help=True, add_completion=False)
# Piped output (scripts, logs) gets whole lines and unfolded tables, not an 80-column fold.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
DEFAULT_URL = "http://127.0.0.1:8000"


class Context:
    def __init__(self, url: str, token: str | None):
        self.url, self.token = url, token

    def client(self) -> Client:
        return Client(self.url, self.token)


@app.callback()
def main(ctx: typer.Context,
         url: Annotated[str, typer.Option(envvar="SYNCSGD_URL", help="the service")] = DEFAULT_URL,
         token: Annotated[str | None, typer.Option(envvar="SYNCSGD_TOKEN",
                                                   help="bearer token")] = None) -> None:
    ctx.obj = Context(url, token)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from exc
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{path}: expected a JSON object")
    return value


def _api(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a client call; an API error becomes a one-line message and exit status 1."""
    try:
        return call(*args, **kwargs)
    except ApiError as exc:
        console.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from exc


# ---- the service -------------------------------------------------------------------------


@app.command()
def serve(host: Annotated[str | None, typer.Option(help="default: SYNCSGD_HOST")] = None,
          port: Annotated[int | None, typer.Option(help="default: SYNCSGD_PORT")] = None,
          data_dir: Annotated[Path | None, typer.Option(help="default: SYNCSGD_DATA_DIR")] = None,
          ) -> None:
    """Run the service (HTTP API, job queue, SQLite) on the configured Ray."""
    import uvicorn

    from service.main import create_app

    overrides = {k: v for k, v in {"host": host, "port": port, "data_dir": data_dir}.items()
                 if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    logs.configure(settings.log_format)
    # Bind before the app starts: Ray, started by the app, opens ports of its own and
    # could otherwise take ours in between.
    listener = socket.create_server((settings.host, settings.port), reuse_port=False)
    config = uvicorn.Config(create_app(settings), log_level="warning",
                            timeout_graceful_shutdown=30)
    uvicorn.Server(config).run(sockets=[listener])


# ---- jobs --------------------------------------------------------------------------------


@app.command()
def submit(ctx: typer.Context,
           spec_file: Annotated[Path | None, typer.Argument(
               help="a job spec (JSON); default: the defaults (GET /jobs/defaults)")] = None,
           name: str | None = None, workers: int | None = None, epochs: int | None = None,
           batch_size: int | None = None, allreduce: str | None = None,
           seed: int | None = None,
           optimizer: Annotated[str | None, typer.Option(help="sgd, adam or adamw")] = None,
           lr: float | None = None, weight_decay: float | None = None,
           schedule: Annotated[str | None, typer.Option(
               help="e.g. kind=cosine,min_lr=0.001 (constant, step, exponential, cosine, "
                    "plateau)")] = None,
           warmup_steps: int | None = None,
           clip_norm: Annotated[float | None, typer.Option(
               help="clip the averaged gradient to this global L2 norm")] = None,
           accumulation_steps: Annotated[int | None, typer.Option(
               help="micro-batches per rank and step")] = None,
           dropout: Annotated[float | None, typer.Option(
               help="dropout rate of every hidden layer")] = None,
           early_stopping: Annotated[str | None, typer.Option(
               help="e.g. patience=3,monitor=val_accuracy ('' for the defaults)")] = None,
           priority: Annotated[str | None, typer.Option(
               help="low, normal or high (high: for users allowed it)")] = None,
           follow_job: Annotated[bool, typer.Option("--follow", help="then follow it")] = False,
           ) -> None:
    """Queue a job from a spec file; flags override its fields."""
    top = {"name": name, "workers": workers, "epochs": epochs, "batch_size": batch_size,
           "allreduce": allreduce, "seed": seed, "accumulation_steps": accumulation_steps,
           "priority": priority,
           "early_stopping": None if early_stopping is None
           else parse_pairs(early_stopping, "--early-stopping")}
    changes = {"kind": optimizer, "lr": lr, "weight_decay": weight_decay,
               "warmup_steps": warmup_steps, "clip_norm": clip_norm,
               "schedule": None if schedule is None else parse_pairs(schedule, "--schedule")}
    spec = apply_overrides(_read_json(spec_file) if spec_file else {}, top, changes, dropout)
    client = ctx.obj.client()
    job = _api(client.submit, spec)
    console.print(f"{job.id} {job.state.value}")
    if follow_job:
        raise typer.Exit(_follow(client, job.id))


@app.command("list")
def list_jobs(ctx: typer.Context, state: str | None = None,
              limit: Annotated[int, typer.Option(min=1, max=500)] = 20) -> None:
    """The newest jobs."""
    page = _api(ctx.obj.client().jobs, state, limit)
    table = Table("id", "name", "owner", "priority", "state", "step", "loss", "val acc",
                  "created")
    for job in page.items:
        table.add_row(job.id, job.name, job.owner or "", job.spec.priority, job.state.value,
                      f"{job.step}/{job.total_steps or '?'}", _fmt(job.loss),
                      _fmt(job.val_accuracy), job.created_at.isoformat(sep=" ")[:19])
    console.print(table)
    console.print(f"{len(page.items)} of {page.total} jobs")


@app.command()
def status(ctx: typer.Context, job_id: str) -> None:
    """One job, as JSON."""
    console.print_json(_api(ctx.obj.client().job, job_id).model_dump_json())


@app.command()
def follow(ctx: typer.Context, job_id: str) -> None:
    """A progress bar with the live loss, until the job ends (exit 1 unless it succeeded)."""
    raise typer.Exit(_follow(ctx.obj.client(), job_id))


def _follow(client: Client, job_id: str) -> int:
    job = _api(client.job, job_id)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}  val acc {task.fields[acc]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"{job_id} {job.state.value}", total=job.total_steps,
                                 loss="-", acc="-")
        try:
            for event in client.follow(job_id):
                if isinstance(event, PointsEvent):
                    last = event.points[-1]
                    accs = [p.val_accuracy for p in event.points if p.val_accuracy is not None]
                    fields: dict[str, Any] = {"loss": f"{last.loss:.4f}"}
                    if accs:
                        fields["acc"] = f"{accs[-1]:.4f}"
                    progress.update(task, completed=last.step, **fields)
                elif isinstance(event, StateEvent):
                    job = event.job
                    progress.update(task, description=f"{job_id} {job.state.value}",
                                    total=job.total_steps, completed=job.step)
                elif isinstance(event, StragglerEvent):
                    s = event.straggler
                    progress.console.print(f"[yellow]straggler[/yellow] rank {s.rank} on "
                                           f"{s.node}: {s.factor:.1f}x the median compute")
        except ApiError as exc:
            console.print(f"[red]error[/red] {exc}")
            return 1
    job = _api(client.job, job_id)
    console.print(f"{job_id} {job.state.value}: {job.step} steps, loss {_fmt(job.loss)}, "
                  f"val loss {_fmt(job.val_loss)}, val accuracy {_fmt(job.val_accuracy)}")
    if job.error:
        console.print(f"[red]error[/red] {job.error}")
    return 0 if job.state == JobState.succeeded else 1


@app.command()
def curve(ctx: typer.Context, job_id: str,
          png: Annotated[Path | None, typer.Option(help="write a chart here")] = None,
          every: Annotated[int, typer.Option(min=0, help="table: every Nth step, 0: ~20 rows")] = 0,
          ) -> None:
    """The loss curve: a table of steps (and epoch ends), and optionally a PNG chart."""
    points = _api(ctx.obj.client().curve, job_id)
    stride = every or max(1, len(points) // 20)
    table = Table("step", "epoch", "loss", "val loss", "val acc", title=job_id)
    for p in points:
        if p.step % stride == 0 or p.val_loss is not None or p is points[-1]:
            table.add_row(str(p.step), str(p.epoch + 1), f"{p.loss:.4f}", _fmt(p.val_loss),
                          _fmt(p.val_accuracy))
    console.print(table)
    if png is not None:
        _plot(points, png, title=job_id)
        console.print(f"wrote {png}")


def _plot(points: list[StepRecord], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot([p.step for p in points], [p.loss for p in points], lw=0.8,
            label="training loss (per step)")
    ends = [p for p in points if p.val_loss is not None]
    ax.plot([p.step for p in ends], [p.val_loss or 0.0 for p in ends], "o-",
            label="validation loss (per epoch)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if any(p.val_accuracy is not None for p in ends):
        acc = ax.twinx()
        acc.plot([p.step for p in ends], [p.val_accuracy or 0.0 for p in ends], "s--",
                 color="tab:green", label="validation accuracy")
        acc.set_ylabel("accuracy")
        acc.legend(loc="center right")
    ax.legend(loc="lower left")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@app.command()
def predict(ctx: typer.Context, job_id: str,
            inputs_file: Annotated[Path, typer.Argument(
                help="CSV of input rows (numbers only), or JSON: a list of rows")],
            as_json: Annotated[bool, typer.Option("--json", help="print outputs too")] = False,
            ) -> None:
    """Run a succeeded job's model: one predicted class (or output row) per input row."""
    text = inputs_file.read_text()
    try:
        rows = json.loads(text) if inputs_file.suffix == ".json" else [
            [float(v) for v in line.split(",")] for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{inputs_file}: {exc}") from exc
    result = _api(ctx.obj.client().predict, job_id, rows)
    if as_json:
        console.print_json(result.model_dump_json())
    elif result.classes is not None:
        console.print("\n".join(map(str, result.classes)))
    else:
        console.print("\n".join(",".join(f"{v:.6g}" for v in row) for row in result.outputs))


@app.command()
def model(ctx: typer.Context, job_id: str,
          output: Annotated[Path, typer.Option("-o", "--output", help="where to write it")],
          format: Annotated[str, typer.Option(help="npz (Network.load) or onnx")] = "npz",
          ) -> None:
    """Download a succeeded job's model, with its preprocessing."""
    if format not in ("npz", "onnx"):
        raise typer.BadParameter(f"format: {format!r} is not npz or onnx")
    path = _api(ctx.obj.client().model, job_id, output, cast(Literal["npz", "onnx"], format))
    console.print(f"wrote {path} ({path.stat().st_size} bytes)")


@app.command()
def verify(ctx: typer.Context,
           spec_file: Annotated[Path, typer.Argument(help="a job spec (JSON)")],
           workers: Annotated[int, typer.Option(min=2, max=256)] = 4,
           steps: Annotated[int, typer.Option(min=1, max=1000)] = 20) -> None:
    """Train a spec for a few steps with 1 and with N workers: are the weights identical?
    Exit 0 when they are bit for bit, 1 otherwise (with the largest difference)."""
    report = _api(ctx.obj.client().verify, _read_json(spec_file), workers, steps)
    if report.identical:
        console.print(f"identical: 1 and {workers} workers give the same weights bit for bit "
                      f"after {report.steps} steps (sha256 {report.sha256_one[:16]}...)")
    else:
        console.print(f"different: after {report.steps} steps, 1 and {workers} workers "
                      f"differ by up to {report.max_abs_difference:.3g} "
                      f"(relative {report.max_rel_difference:.3g}); "
                      "set \"deterministic\": true for identical weights")
    raise typer.Exit(0 if report.identical else 1)


@app.command()
def timeline(ctx: typer.Context, job_id: str,
             output: Annotated[Path, typer.Option("-o", "--output", help="the .json to write")],
             from_step: Annotated[int | None, typer.Option(min=1)] = None,
             to_step: Annotated[int | None, typer.Option(min=1)] = None) -> None:
    """Every rank's step timings as a Chrome trace: open it in https://ui.perfetto.dev or
    chrome://tracing. Default: the latest steps the service keeps."""
    trace = _api(ctx.obj.client().timeline, job_id, from_step, to_step)
    output.write_text(json.dumps(trace))
    steps = trace["otherData"]["steps"]
    ranks = {e["tid"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    console.print(f"wrote {output}: steps {steps[0]}..{steps[1]} on {len(ranks)} rank(s)"
                  if steps else f"wrote {output}: no steps timed yet")


@app.command()
def tensorboard(ctx: typer.Context, job_id: str,
                output: Annotated[Path, typer.Option("-o", "--output",
                                                     help="the .tar.gz to write")]) -> None:
    """The job's TensorBoard event files (untar, then ``tensorboard --logdir .``)."""
    path = _api(ctx.obj.client().tensorboard, job_id, output)
    console.print(f"wrote {path} ({path.stat().st_size} bytes)")


@app.command()
def cancel(ctx: typer.Context, job_id: str) -> None:
    """Cancel a queued or running job."""
    job = _api(ctx.obj.client().cancel, job_id)
    console.print(f"{job.id} {job.state.value}")


# ---- accounts (an operator's, against the data dir) ---------------------------------------

users_app = typer.Typer(help="Accounts, run by an operator against the service's data dir: "
                        "each user has a token and sees only its own jobs and datasets.",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")
DataDir = Annotated[Path | None, typer.Option(help="default: SYNCSGD_DATA_DIR")]


def _accounts(data_dir: Path | None) -> tuple[Accounts, AuditLog]:
    settings = Settings(**({"data_dir": data_dir} if data_dir else {}))  # type: ignore[arg-type]
    return Accounts(settings.database_path), AuditLog(settings.audit_path)


@users_app.command("add")
def users_add(name: str, admin: Annotated[bool, typer.Option(help="sees and changes all")] = False,
              max_cpus: Annotated[float | None, typer.Option(min=0)] = None,
              max_queued_jobs: Annotated[int | None, typer.Option(min=0)] = None,
              max_dataset_bytes: Annotated[int | None, typer.Option(min=0)] = None,
              may_use_high: Annotated[bool, typer.Option(help="may submit priority high")] = False,
              share: Annotated[float, typer.Option(
                  help="weight in the queue's fair share (2: twice the CPUs of a 1)")] = 1.0,
              data_dir: DataDir = None) -> None:
    """Add a user and print its token, once (only its hash is kept)."""
    accounts, audit = _accounts(data_dir)
    try:
        token = accounts.add(name, admin, max_cpus, max_queued_jobs, max_dataset_bytes,
                             may_use_high, share)
    except FieldError as exc:
        console.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from exc
    audit.record(getpass.getuser(), "user-add", name, admin=admin)
    console.print(token)


@users_app.command("list")
def users_list(data_dir: DataDir = None) -> None:
    """The users and their quotas (never their tokens)."""
    table = Table("name", "admin", "max cpus", "max queued", "max dataset bytes", "high",
                  "share", "created")
    for u in _accounts(data_dir)[0].list():
        table.add_row(u.name, "yes" if u.admin else "", _opt(u.max_cpus),
                      _opt(u.max_queued_jobs), _opt(u.max_dataset_bytes),
                      "yes" if u.may_use_high else "", f"{u.share:g}",
                      u.created_at.isoformat()[:19])
    console.print(table)


@users_app.command("remove")
def users_remove(name: str, data_dir: DataDir = None) -> None:
    """Remove a user: its token stops working at once (its jobs and datasets stay)."""
    accounts, audit = _accounts(data_dir)
    try:
        accounts.remove(name)
    except LookupError as exc:
        console.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from exc
    audit.record(getpass.getuser(), "user-remove", name)
    console.print(f"removed {name}")


@users_app.command("token")
def users_token(name: str,
                rotate: Annotated[bool, typer.Option(help="required: a new token")] = False,
                data_dir: DataDir = None) -> None:
    """With --rotate: a new token for NAME, printed once; the old one stops working."""
    if not rotate:
        raise typer.BadParameter("tokens are kept only as hashes; --rotate makes a new one")
    accounts, audit = _accounts(data_dir)
    try:
        token = accounts.rotate(name)
    except LookupError as exc:
        console.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from exc
    audit.record(getpass.getuser(), "token-rotate", name)
    console.print(token)


def _opt(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


# ---- datasets ----------------------------------------------------------------------------

datasets_app = typer.Typer(help="Upload or register datasets, and list them.",
                           no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("add")
def datasets_add(
        ctx: typer.Context,
        file: Annotated[Path | None, typer.Argument(help="a file to upload")] = None,
        path: Annotated[str | None, typer.Option(
            help="instead: a path under the service's SYNCSGD_DATASETS_ROOT")] = None,
        label: Annotated[str | None, typer.Option(help="the label column")] = None,
        name: Annotated[str | None, typer.Option(help="default: the file's name")] = None,
        format: Annotated[str | None, typer.Option(
            help="csv, parquet, npz (uploads) or npy (paths); default: from the suffix")] = None,
        task: Annotated[str, typer.Option(help="classification or regression")] = (
            "classification")) -> None:
    """Add a dataset and follow its ingest with a progress bar; prints its id."""
    if (file is None) == (path is None):
        raise typer.BadParameter("give a FILE to upload or --path P to register, one of them")
    source = str(file or path)
    fields = {"name": name or Path(source).name, "task": task,
              "format": format or Path(source).suffix.lstrip(".") or "parquet"}
    if label is not None:
        fields["label"] = label
    client = ctx.obj.client()
    if file is not None:
        dataset = _api(client.upload_dataset, file, **fields)
    else:
        dataset = _api(client.register_dataset, {**fields, "path": path})
    raise typer.Exit(_follow_ingest(client, dataset))


def _follow_ingest(client: Client, dataset: DatasetPublic) -> int:
    with Progress(TextColumn("ingesting {task.description}"), TextColumn("{task.completed} rows"),
                  TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task(dataset.id, total=None)
        while dataset.state == DatasetState.ingesting:
            progress.update(bar, completed=dataset.rows_done)
            time.sleep(0.25)
            dataset = _api(client.dataset, dataset.id)
        progress.update(bar, completed=dataset.rows_done)
    if dataset.state != DatasetState.ready:
        console.print(f"[red]failed[/red] {dataset.id}: {dataset.error}")
        return 1
    kind = "classes" if dataset.classes else "outputs"
    console.print(f"{dataset.id} ready: {dataset.rows} rows, {dataset.features} "
                  f"features, {dataset.outputs} {kind}")
    return 0


@datasets_app.command("list")
def datasets_list(ctx: typer.Context) -> None:
    """The datasets, newest first."""
    table = Table("id", "name", "state", "rows", "features", "task", "source")
    for d in _api(ctx.obj.client().datasets):
        table.add_row(d.id, d.name, d.state.value, str(d.rows or d.rows_done),
                      str(d.features), d.task, d.source)
    console.print(table)


# ---- the engine --------------------------------------------------------------------------


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


# ---- the demo ----------------------------------------------------------------------------

DEMO_SPEC: dict[str, Any] = {
    "name": "digits-mlp",
    "model": {"input_dim": 64, "layers": [{"units": 128, "activation": "relu"},
                                          {"units": 10, "activation": "softmax"}]},
    "loss": "cross_entropy", "optimizer": {"kind": "sgd", "lr": 0.1, "momentum": 0.9},
    "data": {"dataset": "digits", "validation_fraction": 0.2},
    "batch_size": 64, "epochs": 30, "workers": 2, "allreduce": "mpi", "seed": 0}


@app.command()
def demo(epochs: Annotated[int, typer.Option(min=1, max=1000)] = 30,
         workers: Annotated[int, typer.Option(min=1, max=64)] = 2,
         allreduce: Annotated[str, typer.Option(help="mpi, ray or local")] = "mpi",
         png: Annotated[Path, typer.Option(help="the loss-curve chart")] = Path("demo-curve.png"),
         data_dir: Annotated[Path | None, typer.Option(help="default: a temporary dir")] = None,
         ) -> None:
    """The main job end to end: start the service on an embedded Ray and SQLite, submit
    the digits MLP with data-parallel workers, follow it live, chart its curve, shut down.
    """
    console.print("starting a service with an embedded Ray and SQLite ...")
    with local_service("demo", cpus=max(2, workers), data_dir=data_dir) as client:
        console.print(f"the service is up at {client.http.base_url}")
        spec = {**DEMO_SPEC, "epochs": epochs, "workers": workers, "allreduce": allreduce}
        job = _api(client.submit, spec)
        console.print(f"submitted {job.id}: {spec['name']}, {workers} workers, "
                      f"all-reduce {allreduce}, {epochs} epochs")
        code = _follow(client, job.id)
        points = _api(client.curve, job.id)
        _plot(points, png, title=f"{spec['name']} ({job.id})")
        console.print(f"loss curve: {png} ({len(points)} steps)")
    raise typer.Exit(code)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    app()
