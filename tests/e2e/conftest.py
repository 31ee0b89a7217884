"""The e2e tier's default service: 2 CPUs, up to 2 jobs at a time, with the Ray dashboard
(its state API shows which actors are alive)."""

from service.local import free_port
from tests.e2e.helpers import service_fixture

server = service_fixture("service", max_concurrent_jobs=2, ray_dashboard="true",
                         ray_dashboard_port=free_port())
