"""Cluster nodes on one machine: one network namespace per node, joined by a bridge.

The rules (docs/testing.md, "Multi-node on one machine", network safety):
- the bridge lives in a namespace of its own; every node namespace has ``lo`` up and an
  ``eth0`` (a veth whose other end is on the bridge) with its own address;
- traffic goes only to loopback or to these namespaces: every client runs INSIDE a
  namespace, and while the topology exists the root namespace holds a blackhole route
  for the test subnet (nothing can leave the machine through the default route);
- names are unique per run; teardown kills by pid (``ip netns pids``) and then deletes,
  so only what the test made is touched. :meth:`Topology.leftovers` proves it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@dataclass(frozen=True)
class Node:
    name: str       # a role: head, worker1, client, ...
    netns: str      # the namespace, unique per run
    address: str    # eth0's address inside the namespace
    bridge_port: str  # the veth end on the bridge, in the switch namespace


@dataclass
class Topology:
    """Namespaces ``<tag>-<role>`` on the subnet ``10.<a>.<b>.0/24`` (random per run)."""

    roles: Sequence[str]
    tag: str = field(default_factory=lambda: f"sgd{uuid.uuid4().hex[:6]}")
    subnet_prefix: str = field(
        default_factory=lambda: f"10.{random.randint(100, 250)}.{random.randint(0, 255)}")
    nodes: dict[str, Node] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def subnet(self) -> str:
        return f"{self.subnet_prefix}.0/24"

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def create(self) -> None:
        # The blackhole first: from here on nothing in the root namespace reaches the subnet.
        ip("route", "add", "blackhole", self.subnet)
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "set", "lo", "up")
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for number, role in enumerate(self.roles, start=1):
            node = Node(role, f"{self.tag}-{role}", f"{self.subnet_prefix}.{number}",
                        f"v{number}-{self.tag}"[:15])
            ip("netns", "add", node.netns)
            ip("-n", node.netns, "link", "set", "lo", "up")
            ip("-n", self.switch, "link", "add", node.bridge_port, "type", "veth",
               "peer", "name", "eth0", "netns", node.netns)
            ip("-n", self.switch, "link", "set", node.bridge_port, "master", "br0", "up")
            ip("-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0")
            ip("-n", node.netns, "link", "set", "eth0", "up")
            self.nodes[role] = node

    def spawn(self, role: str, argv: Sequence[str], env: Mapping[str, str], log: Path,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the node's namespace, output to ``log`` (``ip netns exec``
        execs it, so the pid is the program's)."""
        output = log.open("wb")
        self.logs.append(output)
        process = subprocess.Popen(["ip", "netns", "exec", self.nodes[role].netns, *argv],
                                   env=dict(env), stdout=output, stderr=subprocess.STDOUT,
                                   cwd=cwd, start_new_session=True)
        self.processes.append(process)
        return process

    def run(self, role: str, argv: Sequence[str], env: Mapping[str, str],
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a client command inside the node's namespace and wait for it."""
        return subprocess.run(["ip", "netns", "exec", self.nodes[role].netns, *argv],
                              env=dict(env), capture_output=True, text=True, timeout=timeout)

    def pids(self, role: str) -> list[int]:
        return [int(p) for p in ip("netns", "pids", self.nodes[role].netns).split()]

    def kill_node(self, role: str) -> list[int]:
        """SIGKILL every process in the node's namespace (a machine that dies)."""
        killed: list[int] = []
        deadline = time.monotonic() + 30
        while (pids := self.pids(role)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed.extend(pids)
            time.sleep(0.2)
        for process in self.processes:  # reap our direct children
            with contextlib.suppress(subprocess.TimeoutExpired):
                if process.poll() is None and process.pid in killed:
                    process.wait(timeout=5)
        return killed

    def interface_bytes(self, role: str) -> tuple[int, int]:
        """``(received, sent)`` bytes of the node's eth0, from the kernel's counters."""
        [link] = json.loads(ip("-n", self.nodes[role].netns, "-s", "-j", "link", "show",
                               "dev", "eth0"))
        return int(link["stats64"]["rx"]["bytes"]), int(link["stats64"]["tx"]["bytes"])

    def destroy(self) -> None:
        """Kill every process in our namespaces by pid, then delete them and the route."""
        for role in self.nodes:
            self.kill_node(role)
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        for output in self.logs:
            output.close()
        for netns in [node.netns for node in self.nodes.values()] + [self.switch]:
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", netns)
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("route", "del", "blackhole", self.subnet)

    def leftovers(self) -> list[str]:
        """What of this topology still exists: namespaces, routes, processes."""
        left = [line.split()[0] for line in ip("netns", "list").splitlines()
                if line.startswith(self.tag)]
        left += [line for line in ip("route", "show", "table", "all").splitlines()
                 if self.subnet_prefix + "." in line]
        left += [f"pid {p.pid}" for p in self.processes if p.poll() is None]
        return left


@contextlib.contextmanager
def topology(roles: Sequence[str]) -> Iterator[Topology]:
    """Create, yield, destroy; the caller asserts :meth:`Topology.leftovers` is empty."""
    net = Topology(roles)
    try:
        net.create()
        yield net
    finally:
        net.destroy()
