"""The queue's order (priority, then fair share, then submission) and what a job of
higher priority takes from running ones, as pure decisions."""

from __future__ import annotations

from service.queue_policy import Holder, Preemption, next_job, plan_preemption
from service.store import QueuedJob

LOW, NORMAL, HIGH = 0, 1, 2


def order(queued: list[QueuedJob], held: dict[str, float], shares: dict[str, float],
          cpus: float = 1.0) -> list[str]:
    """The ids in the order they would start, each start adding ``cpus`` to its owner."""
    left, held, started = list(queued), dict(held), []
    while (job := next_job(left, held, shares)) is not None:
        left.remove(job)
        owner = job.owner or "admin"
        held[owner] = held.get(owner, 0.0) + cpus
        started.append(job.id)
    return started


def test_a_higher_priority_goes_first_whoever_holds_what() -> None:
    queued = [QueuedJob("a1", "a", NORMAL), QueuedJob("b1", "b", LOW),
              QueuedJob("a2", "a", HIGH)]
    assert order(queued, {"a": 10.0}, {}) == ["a2", "a1", "b1"]


def test_fair_share_lets_a_late_user_in_before_the_busy_one_s_later_jobs() -> None:
    queued = [QueuedJob(f"a{i}", "a", NORMAL) for i in range(1, 7)]
    queued.append(QueuedJob("b1", "b", NORMAL))
    # A holds 2 CPUs with its first jobs: B's one is next, then A's in their order.
    assert order(queued, {"a": 2.0}, {}) == ["b1", "a1", "a2", "a3", "a4", "a5", "a6"]
    # With nothing held, ties go to the older job, and then B holds as much as A.
    assert order(queued, {}, {}) == ["a1", "b1", "a2", "a3", "a4", "a5", "a6"]


def test_shares_weight_the_cpus_each_owner_holds() -> None:
    queued = [*(QueuedJob(f"a{i}", "a", NORMAL) for i in range(4)),
              *(QueuedJob(f"b{i}", "b", NORMAL) for i in range(4))]
    started = order(queued, {}, {"a": 3.0})
    # A, with 3 times B's share, starts 3 jobs for each of B's.
    assert started[:4] == ["a0", "b0", "a1", "a2"]
    assert [j for j in started if j.startswith("a")] == ["a0", "a1", "a2", "a3"]


def test_jobs_from_before_accounts_are_the_admin_s() -> None:
    queued = [QueuedJob("old", None, NORMAL), QueuedJob("b1", "b", NORMAL)]
    assert order(queued, {"admin": 1.0}, {}) == ["b1", "old"]


def holder(job_id: str, priority: int, cpus: float, shrinkable: float = 0.0,
           started: int = 0) -> Holder:
    return Holder(job_id, priority, cpus, shrinkable, started)


def test_elastic_jobs_shrink_to_their_min_before_any_job_stops() -> None:
    holders = [holder("fixed", LOW, 2, started=1), holder("elastic", LOW, 4, 3, started=2)]
    assert plan_preemption(HIGH, 3, False, holders) == Preemption(shrink=("elastic",))
    # More than shrinking gives: a job stops, and the elastic one still only shrinks.
    assert plan_preemption(HIGH, 5, False, holders) == Preemption(shrink=("elastic",),
                                                                  stop=("fixed",))
    assert plan_preemption(HIGH, 6, False, holders) == Preemption(stop=("elastic", "fixed"))
    # Of two elastic jobs, the latest started stops whole first.
    two = [holder("old", LOW, 2, 1, started=1), holder("new", LOW, 2, 1, started=2)]
    assert plan_preemption(HIGH, 3, False, two) == Preemption(shrink=("old",), stop=("new",))


def test_the_lowest_priority_and_latest_started_give_first() -> None:
    holders = [holder("low-old", LOW, 1, started=1), holder("low-new", LOW, 1, started=3),
               holder("normal", NORMAL, 1, started=2)]
    assert plan_preemption(HIGH, 1, False, holders) == Preemption(stop=("low-new",))
    assert plan_preemption(HIGH, 3, False, holders) == Preemption(
        stop=("low-new", "low-old", "normal"))
    # A normal job takes from low ones only; what they hold is not enough for 3 CPUs.
    assert plan_preemption(NORMAL, 2, False, holders) == Preemption(
        stop=("low-new", "low-old"))
    assert plan_preemption(NORMAL, 3, False, holders) is None


def test_equal_priorities_never_preempt_each_other() -> None:
    assert plan_preemption(NORMAL, 1, False, [holder("n", NORMAL, 4, 3)]) is None


def test_a_full_job_count_takes_a_whole_job_even_when_cpus_are_free() -> None:
    holders = [holder("elastic", LOW, 2, 1, started=1)]
    assert plan_preemption(HIGH, 0, True, holders) == Preemption(stop=("elastic",))
    assert plan_preemption(HIGH, 0, True, []) is None
