"""Where a job's curve goes besides the store: TensorBoard event files and MLflow runs.

Each sink follows the store from its own thread (:class:`Follower`): it sends what the
curve holds past its cursor, so training never waits for it, a restart of the job or
of the service neither loses nor repeats a step, and a sink that fails (an MLflow server
that is down) is retried with backoff while the job trains on.
"""
