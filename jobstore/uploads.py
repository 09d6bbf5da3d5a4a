"""Uploaded datasets' records in Redis, per tenant (model records live with the job store's checkpoints).

A record is only ever read with its tenant: another tenant's id reads as missing (a 404), so ids
reveal nothing across tenants (DESIGN §6).
"""

from __future__ import annotations

import redis

from jobstore.records import DatasetRecord

MAX_LISTED = 1000


class DatasetStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis, self.prefix = client, prefix

    def _key(self, dataset_id: str) -> str:
        return f"{self.prefix}dataset:{dataset_id}"

    def _tenant_key(self, tenant: str) -> str:
        return f"{self.prefix}tenant:{tenant}:datasets"

    def add(self, record: DatasetRecord) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(record.id), record.model_dump_json())
            pipe.zadd(self._tenant_key(record.tenant), {record.id: record.created_at.timestamp()})
            pipe.execute()

    def get(self, dataset_id: str, tenant: str) -> DatasetRecord | None:
        raw = self.redis.get(self._key(dataset_id))
        if raw is None:
            return None
        record = DatasetRecord.model_validate_json(raw)
        return record if record.tenant == tenant else None

    def list(self, tenant: str, limit: int = 100) -> list[DatasetRecord]:
        ids = self.redis.zrevrange(self._tenant_key(tenant), 0, min(limit, MAX_LISTED) - 1)
        records = [self.get(str(i), tenant) for i in ids]
        return [r for r in records if r is not None]
