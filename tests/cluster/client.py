"""The test's HTTP client, run INSIDE the client namespace (``python -m tests.cluster.client``):
the root namespace never sends to the test subnet. Sends ``SYNCSGD_TOKEN`` when set.
Prints one JSON object.

    start URL SPEC_JSON          submit; wait until a step has run; print the job
    run URL SPEC_JSON OUT_DIR    submit; follow the SSE stream to the end; print the job,
                                 the curve (GET /curve) and the events' steps; save the
                                 model (GET /model) to OUT_DIR/model.npz
    wait URL JOB_ID [SECONDS]    wait for the job to end (180 s at most); print it
    get URL JOB_ID               GET /jobs/{id}
    curve URL JOB_ID             the steps of the job's whole curve
    model URL JOB_ID OUT_DIR     save the model (GET /model) to OUT_DIR/model.npz; print {}
    health URL                   GET /healthz
    post URL SPEC_JSON           POST /jobs; print the status code and the body
    register URL JSON            POST /datasets/register, waiting; print the dataset
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from common.schemas import JobPublic
from service.client import Client, PointsEvent


def start(client: Client, spec: dict[str, Any]) -> JobPublic:
    job = client.submit(spec)
    deadline = time.monotonic() + 120
    while (job := client.job(job.id)).step == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    return job


def run(client: Client, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    job = client.submit(spec)
    streamed = [point.step for event in client.follow(job.id)
                if isinstance(event, PointsEvent) for point in event.points]
    out.mkdir(parents=True, exist_ok=True)
    client.model(job.id, out / "model.npz")
    return {"job": client.job(job.id).model_dump(mode="json"),
            "curve": [p.to_dict() for p in client.curve(job.id)], "streamed_steps": streamed}


def main(command: str, url: str, *args: str) -> None:
    client = Client(url, token=os.environ.get("SYNCSGD_TOKEN"), timeout=60)
    client.wait_until_up(60)
    result: Any
    if command == "health":
        result = client.health().model_dump(mode="json")
    elif command == "post":
        response = client.http.post("/jobs", json=json.loads(args[0]))
        result = {"status": response.status_code, "body": response.json()}
    elif command == "register":
        result = client.register_dataset(json.loads(args[0]), wait=True).model_dump(mode="json")
    elif command == "start":
        result = start(client, json.loads(args[0])).model_dump(mode="json")
    elif command == "run":
        result = run(client, json.loads(args[0]), Path(args[1]))
    elif command == "get":
        result = client.job(args[0]).model_dump(mode="json")
    elif command == "curve":
        result = [point.step for point in client.curve(args[0])]
    elif command == "model":
        Path(args[1]).mkdir(parents=True, exist_ok=True)
        client.model(args[0], Path(args[1]) / "model.npz")
        result = {}
    else:
        timeout_s = float(args[1]) if len(args) > 1 else 180
        result = client.wait(args[0], timeout_s, poll_s=0.2).model_dump(mode="json")
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
