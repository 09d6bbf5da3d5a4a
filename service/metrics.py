"""Prometheus metrics read from Redis at scrape time, in a registry of the app's own.

A custom collector rather than counters updated in request handlers: the numbers (jobs by status,
queue depth, workers, durations) live in Redis and are shared by every API process, so each scrape
reads them fresh and any API replica reports the same values. A per-app CollectorRegistry keeps
several apps in one process (tests) from colliding in the global registry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from jobstore.queue import job_queue
from jobstore.units import units_by_tenant
from service.deps import Services

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0)


class ServiceCollector(Collector):
    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        store, settings = self.services.store, self.services.settings
        jobs = GaugeMetricFamily("robustlab_jobs", "Jobs by status", labels=["status"])
        for status, count in store.count_by_status().items():
            jobs.add_metric([status.value], count)
        yield jobs
        units = GaugeMetricFamily("robustlab_units", "Work units of jobs queued or running, by tenant (a job is "
                                  "spread over units that any worker takes)", labels=["tenant", "status"])
        for (tenant, status_name), count in sorted(units_by_tenant(store).items()):
            units.add_metric([tenant, status_name], count)
        yield units

        queue = job_queue(self.services.rq, settings)
        yield GaugeMetricFamily("robustlab_queue_depth", "Executions waiting in the RQ queue (at most "
                                "ROBUSTLAB_QUEUE_DEPTH: fair dispatch holds the rest back)",
                                value=queue.count, labels=None)
        yield GaugeMetricFamily("robustlab_jobs_waiting_dispatch", "Queued jobs not yet handed to RQ (fair dispatch)",
                                value=store.waiting_for_dispatch(), labels=None)
        yield GaugeMetricFamily("robustlab_workers", "RQ workers alive on the queue",
                                value=len(self.services.store.live_workers(self.services.settings.queue)))

        durations = store.durations()
        buckets = [(str(bound), sum(1 for d in durations if d <= bound)) for bound in DURATION_BUCKETS]
        buckets.append(("+Inf", len(durations)))
        yield HistogramMetricFamily("robustlab_job_duration_seconds",
                                    "Run time of recently finished jobs (last 1000), start to finish",
                                    buckets=buckets, sum_value=sum(durations))


def make_registry(services: Services) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(services))
    return registry
