"""MPI-native launch, without Ray: ``mpiexec -n N python -m worker.mpi_main job.json``.

For HPC users with mpiexec or Slurm. The same trainer as under Ray; only the
launcher (mpiexec instead of a worker group) and the communicator
(``COMM_WORLD`` instead of one grown through ports) differ. Rank 0 writes the
step records as JSON lines (``steps.jsonl``, flushed after each chunk, so
``tail -f`` follows the curve) and the final weights (``model.npz``,
loadable with ``common.nn.Network.load``) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.data import check_spec_matches_data, load_dataset
from common.schemas import JobSpec
from worker.backends.mpi import MpiAllReduce
from worker.trainer import Trainer

CHUNK_STEPS = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.mpi_main", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path, help="the job spec (JSON)")
    parser.add_argument("--out", type=Path, default=Path("syncsgd-out"),
                        help="directory for steps.jsonl and model.npz (default: syncsgd-out)")
    parser.add_argument("--datasets-dir", type=Path, default=None,
                        help="where datasets live (default: $SYNCSGD_DATASETS_DIR, else "
                             "~/.cache/syncsgd/datasets)")
    args = parser.parse_args(argv)

    from mpi4py import MPI

    comm = MpiAllReduce(MPI.COMM_WORLD)
    master = comm.rank == 0  # this process does the writing
    spec = JobSpec.model_validate_json(args.spec.read_text())
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype,
                        datasets_dir=args.datasets_dir)
    check_spec_matches_data(spec, data)
    trainer = Trainer(spec, data, comm)
    if master:
        args.out.mkdir(parents=True, exist_ok=True)
    steps_file = (args.out / "steps.jsonl").open("w") if master else None
    try:
        while not trainer.done:
            chunk = trainer.run(CHUNK_STEPS)
            if chunk.fingerprint is not None:
                hashes = comm.comm.allgather(chunk.fingerprint)
                if len(set(hashes)) != 1:
                    odd = [r for r, h in enumerate(hashes) if h != hashes[0]]
                    raise RuntimeError(f"replicas diverged by step {chunk.step}: ranks {odd}")
            if steps_file is not None:
                steps_file.writelines(json.dumps(r.to_dict()) + "\n" for r in chunk.records)
                steps_file.flush()
    finally:
        if steps_file is not None:
            steps_file.close()
    if master:
        trainer.net.preprocessing = data.preprocessing
        trainer.net.save(args.out / "model.npz")
        last = chunk.records[-1] if chunk.records else None
        print(json.dumps({"steps": trainer.step, "world_size": comm.world_size,
                          "final": last.to_dict() if last else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
