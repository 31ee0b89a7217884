"""A user's job quotas in process: submissions that arrive together are checked one
after the other, so that no two of them pass a quota together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.service.conftest import AppFactory

SMALL = {"workers": 1, "epochs": 1, "max_steps": 1000,
         "model": {"input_dim": 64, "layers": [{"units": 10, "activation": "softmax"}]}}


def test_concurrent_submissions_cannot_pass_a_cpu_quota_together(make_app: AppFactory) -> None:
    api = make_app(cpus=8)
    token = api.app.state.accounts.add("alice", max_cpus=1)
    headers = {"Authorization": f"Bearer {token}"}

    def submit(i: int) -> int:
        return api.post("/jobs", json={**SMALL, "name": f"j{i}"}, headers=headers).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(submit, range(8)))
    assert codes == [201] + [429] * 7
    jobs = api.get("/jobs", headers=headers).json()
    assert jobs["total"] == 1
