"""Bad input gets an error that names the field or the shape, and builds nothing."""

import numpy as np
import pytest
from pydantic import ValidationError

from common.data import check_spec_matches_data, load_dataset
from common.nn import Network
from common.schemas import JobSpec, ModelSpec


def error_text(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.value.errors())


@pytest.mark.parametrize(("spec", "names"), [
    ({"model": {"input_dim": 64, "layers": [{"units": 8, "activation": "softmax"},
                                            {"units": 10, "activation": "softmax"}]}},
     ["layers[0].activation", "softmax"]),
    ({"model": {"input_dim": 64, "layers": [{"units": 0}, {"units": 10,
                                                           "activation": "softmax"}]}},
     ["model.layers.0.units", "greater than or equal to 1"]),
    ({"optimizer": {"lr": -0.1}}, ["optimizer.lr", "greater than 0"]),
    ({"optimizer": {"lr": 0}}, ["optimizer.lr", "greater than 0"]),
    ({"model": {"layers": [{"units": 10, "activation": "swish"}]}},
     ["model.layers.0.activation", "'relu'"]),
    ({"epoch": 5}, ["epoch", "Extra inputs are not permitted"]),
    ({"model": {"input_dim": 64, "layers": [{"units": 10, "activation": "relu"}]}},
     ["loss", "softmax"]),
    ({"allreduce": "local", "workers": 2}, ["allreduce", "workers"]),
    ({"batch_size": 10**6}, ["batch_size", "less than or equal to 65536"]),
    ({"data": {"dataset": "../../etc/passwd"}}, ["data.dataset", "pattern"]),
])
def test_invalid_job_spec_names_the_field(spec: dict[str, object], names: list[str]) -> None:
    with pytest.raises(ValidationError) as exc:
        JobSpec.model_validate(spec)
    text = error_text(exc)
    for name in names:
        assert name in text


def test_network_is_not_built_from_an_invalid_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    built = []
    monkeypatch.setattr(Network, "__init__", lambda self, *a, **k: built.append(1))
    with pytest.raises(ValidationError):
        Network.from_spec({"input_dim": 3, "layers": [{"units": 0}]})
    assert built == []


def test_input_dim_not_matching_the_data_names_both_numbers() -> None:
    spec = JobSpec(model=ModelSpec(input_dim=32))
    with pytest.raises(ValueError, match=r"model\.input_dim: is 32 but dataset 'digits' has 64"):
        check_spec_matches_data(spec, load_dataset(spec.data, seed=0))


def test_output_units_not_matching_the_classes() -> None:
    spec = JobSpec.model_validate({"model": {"input_dim": 64, "layers": [
        {"units": 16}, {"units": 7, "activation": "softmax"}]}})
    with pytest.raises(ValueError, match=r"model\.layers\[-1\]\.units: is 7 .* 10 classes"):
        check_spec_matches_data(spec, load_dataset(spec.data, seed=0))


def test_bad_arrays_name_the_shape() -> None:
    net = Network.from_spec({"input_dim": 4, "layers": [{"units": 3, "activation": "softmax"}]})
    with pytest.raises(ValueError, match=r"x: expected shape \(n, 4\), got \(2, 5\)"):
        net.predict(np.zeros((2, 5)))
    x = np.zeros((3, 4))
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x: contains NaN or inf \(first in row 1\)"):
        net.loss_and_gradients(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"y: class labels must be in \[0, 3\)"):
        net.loss_and_gradients(np.zeros((2, 4)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"x: expected real numbers"):
        net.predict(np.array([["a", "b", "c", "d"]]))
    before = net.params.copy()
    with pytest.raises(ValueError):
        net.loss_and_gradients(np.zeros((2, 4)), np.array([0, 1, 2]))
    assert net.params.tobytes() == before.tobytes()
