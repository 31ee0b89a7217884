"""``bench.recovery`` on a real two-node Ray cluster in network namespaces: the
docker-compose topology's head (0 CPUs) and two worker nodes of 2 CPUs, one rank on each
(``placement: spread``); the driver runs in the head's namespace, as the service would.
A rank's SIGKILL and a resize therefore cross nodes: the fresh group's MPI join and its
state broadcast go over the veth link. Needs root and iproute2. Prints JSON.

    python -m bench.recovery_nodes [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.cluster import compose
from tests.cluster.netns import topology
from tests.cluster.nodes import plain_environment, start_service

CPUS_PER_NODE = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise SystemExit("network namespaces need root and iproute2")
    base = plain_environment()
    auth = {"RAY_AUTH_TOKEN": secrets.token_hex(32)}
    with tempfile.TemporaryDirectory(prefix="bench-rec-", dir="/tmp") as tmp_name, \
            topology(["head", "worker1", "worker2"]) as net:
        tmp = Path(tmp_name)
        head = net.nodes["head"].address
        start_service(net, "head", "ray-head", {**base, **compose.environment("ray-head", {
            **auth, "NODE_IP": head, "RAY_TEMP_DIR": str(tmp / "ray-head")})},
            tmp / "ray-head.log")
        for role in ("worker1", "worker2"):
            start_service(net, role, "ray-worker", {**base, **compose.environment(
                "ray-worker", {**auth, "NODE_IP": net.nodes[role].address,
                               "RAY_HEAD": f"{head}:6379", "RAY_NUM_CPUS": str(CPUS_PER_NODE),
                               "RAY_TEMP_DIR": str(tmp / f"ray-{role}")})},
                tmp / f"ray-{role}.log")
        time.sleep(2)  # the second worker node's registration reaches the head
        env = {**base, **auth, "RAY_AUTH_MODE": "token", "UCX_TLS": "tcp,self",
               "PYTHONPATH": str(compose.ROOT)}
        done = net.run("head", [sys.executable, "-m", "bench.recovery", "--repeat",
                                str(args.repeat), "--address", f"{head}:6379"], env,
                       timeout=1800)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not net.leftovers(), net.leftovers()
    result = json.loads(done.stdout[done.stdout.index("{\n"):])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
