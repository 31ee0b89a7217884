"""The sharded update's slicing and its one-rank case, in process (the multi-rank runs
are in test_sharded_update.py)."""

import itertools

import numpy as np

from common.collective import LocalAllReduce
from common.data import load_dataset
from common.schemas import JobSpec
from worker.sharding import BLOCK, ShardedOptimizerState, Slices
from worker.trainer import Trainer


def test_slices_are_whole_blocks_and_cover_every_parameter() -> None:
    for size, world in ((2785, 2), (2785, 3), (10, 4), (BLOCK * 8, 3), (5 * BLOCK + 1, 5)):
        slices = Slices(size, world)
        bounds = [slices.bounds(r) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == size and sum(slices.counts) == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        assert all(lo % BLOCK == 0 for lo, _ in bounds if lo < size)
    assert Slices(2785, 3).counts == [1024, 1024, 737]
    assert Slices(10, 4).counts == [10, 0, 0, 0]  # fewer blocks than ranks: some hold none


def test_one_rank_sharded_is_the_plain_update_bit_for_bit() -> None:
    spec = JobSpec.model_validate({
        "model": {"input_dim": 64, "layers": [{"units": 37, "activation": "tanh"},
                                              {"units": 10, "activation": "softmax"}]},
        "optimizer": {"kind": "adam", "lr": 0.01, "clip_norm": 0.3}, "batch_size": 67,
        "epochs": 2, "dtype": "float64", "seed": 5})
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    plain = Trainer(spec, data, LocalAllReduce())
    sharded = Trainer(spec.model_copy(update={"sharded_update": True}), data, LocalAllReduce())
    for trainer in (plain, sharded):
        trainer.run(trainer.total_steps)
    assert sharded.net.params.tobytes() == plain.net.params.tobytes()
    # its checkpoint is the plain one's, and either restores into the other
    state = sharded.state()
    assert {k: v.tobytes() for k, v in state.optimizer.items()} == {
        k: v.tobytes() for k, v in plain.state().optimizer.items()}


def test_a_whole_state_is_cut_to_the_slice_a_rank_owns() -> None:
    whole = {"m": np.arange(2785.0), "v": np.arange(2785.0) * 2, "t": np.array(7)}
    exchange = ShardedOptimizerState(LocalAllReduce(), Slices(2785, 1), ("m", "v"))
    assert {k: v.tolist() for k, v in exchange.slice(whole).items()} == {
        k: v.tolist() for k, v in whole.items()}
    assert exchange.gather(exchange.slice(whole))["m"].tolist() == whole["m"].tolist()
