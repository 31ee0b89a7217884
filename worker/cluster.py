"""Connecting to Ray: the embedded local instance, or a cluster by address.

The embedded instance is started with ``address="local"`` and stopped with
``ray.shutdown()``; a cluster is joined only at the address given. (Ray's CLI
stop command would end every Ray process on the machine, and letting Ray find
a cluster by itself may attach to somebody else's.)
``RAY_AUTH_MODE`` is always set explicitly (Ray 2.60 turns token auth on by
itself as soon as ``~/.ray/auth_token`` exists).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

AuthMode = Literal["disabled", "token"]
T = TypeVar("T")


def connect(address: str | None = None, *, auth_mode: AuthMode | None = None,
            num_cpus: int | None = None, include_dashboard: bool = False,
            dashboard_port: int = 8265, temp_dir: os.PathLike[str] | None = None,
            ) -> dict[str, Any]:
    """Start the embedded Ray (``address=None``) or join the cluster at ``address``.

    Returns the cluster's total resources. Idempotent within a process. Call it from
    a thread that lives as long as the process (the main thread): the embedded Ray's
    processes die with the thread that started them.
    """
    import ray

    os.environ["RAY_AUTH_MODE"] = auth_mode or ("disabled" if address is None else "token")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        with _keep_signal_handlers():
            _init(ray, address, num_cpus, include_dashboard, dashboard_port, temp_dir)
    return dict(ray.cluster_resources())


@contextlib.contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """``ray.init`` on the main thread replaces the SIGTERM handler with ``sys.exit``;
    a server that installed its own (graceful shutdown) must keep it."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        if on_main_thread:
            for signum, handler in saved.items():
                signal.signal(signum, handler)


def _init(ray: Any, address: str | None, num_cpus: int | None, include_dashboard: bool,
          dashboard_port: int, temp_dir: os.PathLike[str] | None) -> None:
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard,
                 dashboard_port=dashboard_port, logging_level=logging.WARNING,
                 log_to_driver=False, _temp_dir=str(temp_dir) if temp_dir else None)
    else:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)


def disconnect() -> None:
    """Leave Ray; stops the embedded instance if this process started it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def problem(embedded: bool) -> str | None:
    """Why this process's Ray cannot run jobs now, or None.

    The embedded instance is lost when one of its head processes has died (the raylet
    killed by the OOM killer, say; seen at once from the process handles), when its
    node is no longer alive, or when its CPUs fall to 0. A cluster is lost when it does
    not answer or has no live node (0 CPUs is allowed: worker nodes may not have joined).
    """
    import ray

    if not ray.is_initialized():
        return "not connected to Ray"
    if embedded and (dead := _dead_head_processes()):
        return f"the embedded Ray lost its {', '.join(sorted(dead))} process (killed or crashed)"
    try:
        alive, cpus = _within(ANSWER_S, lambda: (
            [node for node in ray.nodes() if node.get("Alive")],
            ray.cluster_resources().get("CPU", 0.0)))
    except Exception as exc:  # the GCS is gone, or does not answer
        return f"the Ray head does not answer: {type(exc).__name__}: {exc}"
    if not alive:
        return "no Ray node is alive"
    if embedded and cpus == 0:
        return "the embedded Ray has 0 CPUs"
    return None


#: How long the liveness check waits for Ray's head to answer.
ANSWER_S = 10.0


def _within(timeout_s: float, call: Callable[[], T]) -> T:
    """``call()``, or TimeoutError after ``timeout_s``: a call to a lost GCS blocks until it
    comes back, so it runs on a thread of its own that is left behind when it does not
    answer."""
    box: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="ray-liveness", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if errors:
        raise errors[0]
    if not box:
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    return box[0]


def _dead_head_processes() -> set[str]:
    """The kinds of this process's embedded Ray processes that have exited (raylet,
    gcs_server...). Ray keeps their ``Popen`` handles on its node object; there is no
    public API for them, so a Ray without that object reports none (the node liveness
    check of :func:`problem` still sees the loss, some seconds later)."""
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return set()
    node = getattr(ray_worker, "_global_node", None)
    processes = getattr(node, "all_processes", None) or {}
    return {kind for kind, infos in processes.items()
            for info in infos if info.process.poll() is not None}
