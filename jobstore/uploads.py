"""Uploaded models' and datasets' records in Redis, per tenant, with their life cycle.

A record is only ever read with its tenant: another tenant's id reads as missing (a 404), so ids
reveal nothing across tenants (DESIGN §6). Model records keep the key the job store reads
(`checkpoint:<id>`, JobStore.get_checkpoint); dataset records live at `dataset:<id>`.

The life cycle (each step one Lua script, so no two requests can overrun a quota or both store the
same file):
- add: refused past the tenant's quota of stored uploads (count and bytes, models and datasets
  together); an upload whose dedupe key (sha256 of the bytes sent and of what was declared with
  them) the tenant already stored returns the stored id instead, and the caller drops its copy;
- delete: refused while one of the tenant's queued or running jobs names the upload (its spec or
  its checkpoint field holds the id);
- retention: every upload expires `upload_ttl_seconds` after it was stored or last named by a
  submitted job (`touch`); the reaper deletes what is due, unless a job still uses it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import redis

from jobstore.records import CheckpointRecord, DatasetRecord, Keys

MAX_LISTED = 1000
Kind = Literal["model", "dataset"]

_ADD = """
local existing = redis.call('HGET', KEYS[4], ARGV[4])
if ARGV[4] ~= '' and existing and redis.call('EXISTS', ARGV[10] .. existing) == 1 then
  return {'duplicate', existing}
end
local count = tonumber(redis.call('HGET', KEYS[3], 'count') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes') or '0')
if count + 1 > tonumber(ARGV[6]) then return {'count', tostring(count)} end
if bytes + tonumber(ARGV[5]) > tonumber(ARGV[7]) then return {'bytes', tostring(bytes)} end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'count', 1)
redis.call('HINCRBY', KEYS[3], 'bytes', ARGV[5])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[4], ARGV[4], ARGV[1]) end
redis.call('ZADD', KEYS[5], ARGV[8], ARGV[9])
return {'added', ARGV[1]}
"""

_DELETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
for _, job in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  local f = redis.call('HMGET', ARGV[3] .. job, 'spec', 'checkpoint')
  if (f[1] and string.find(f[1], ARGV[1], 1, true)) or f[2] == ARGV[1] then
    if ARGV[6] ~= '' then redis.call('ZADD', KEYS[5], ARGV[6], ARGV[2]) end
    return {'in_use', job}
  end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'count', -1)
redis.call('HINCRBY', KEYS[3], 'bytes', -tonumber(ARGV[4]))
if ARGV[5] ~= '' and redis.call('HGET', KEYS[4], ARGV[5]) == ARGV[1] then redis.call('HDEL', KEYS[4], ARGV[5]) end
redis.call('ZREM', KEYS[5], ARGV[2])
return {'deleted', ''}
"""


class UploadQuotaExceeded(Exception):
    def __init__(self, what: str, used: int) -> None:
        super().__init__(what)
        self.what, self.used = what, used  # what: count | bytes


class UploadInUse(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


@dataclass(frozen=True)
class Quota:
    max_count: int
    max_bytes: int
    ttl_seconds: int


Record = CheckpointRecord | DatasetRecord


class UploadStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis, self.prefix, self.keys = client, prefix, Keys(prefix)
        self._add = client.register_script(_ADD)
        self._delete = client.register_script(_DELETE)

    def _record_prefix(self, kind: Kind) -> str:
        return f"{self.prefix}checkpoint:" if kind == "model" else f"{self.prefix}dataset:"

    def _index(self, kind: Kind, tenant: str) -> str:
        return f"{self.prefix}tenant:{tenant}:{'models' if kind == 'model' else 'datasets'}"

    def _usage(self, tenant: str) -> str:
        return f"{self.prefix}tenant:{tenant}:upload-usage"

    def _dedupe(self, tenant: str) -> str:
        return f"{self.prefix}tenant:{tenant}:upload-keys"

    def _retention(self) -> str:
        return f"{self.prefix}upload-retention"

    @staticmethod
    def _kind(record: Record) -> Kind:
        return "model" if isinstance(record, CheckpointRecord) else "dataset"

    # ------------------------------------------------------------------ reading
    def get(self, kind: Kind, upload_id: str, tenant: str) -> Record | None:
        raw = self.redis.get(self._record_prefix(kind) + upload_id)
        if raw is None:
            return None
        record: Record = (CheckpointRecord if kind == "model" else DatasetRecord).model_validate_json(raw)
        return record if record.tenant == tenant else None

    def listed(self, kind: Kind, tenant: str, limit: int = 100) -> list[Record]:
        ids = self.redis.zrevrange(self._index(kind, tenant), 0, min(limit, MAX_LISTED) - 1)
        records = [self.get(kind, str(i), tenant) for i in ids]
        return [r for r in records if r is not None]

    def find_duplicate(self, kind: Kind, tenant: str, dedupe_key: str) -> Record | None:
        """The tenant's stored upload of the same bytes with the same declaration, if any."""
        existing = self.redis.hget(self._dedupe(tenant), f"{kind}:{dedupe_key}")
        return self.get(kind, str(existing), tenant) if existing else None

    def usage(self, tenant: str) -> tuple[int, int]:
        """(uploads stored, bytes stored) of the tenant."""
        count, size = self.redis.hmget(self._usage(tenant), "count", "bytes")
        return int(count or 0), int(size or 0)

    def check_quota(self, tenant: str, size: int, quota: Quota) -> None:
        """UploadQuotaExceeded if one more upload of `size` bytes would not fit (add checks it again, atomically)."""
        count, used = self.usage(tenant)
        if count + 1 > quota.max_count:
            raise UploadQuotaExceeded("count", count)
        if used + size > quota.max_bytes:
            raise UploadQuotaExceeded("bytes", used)

    # ------------------------------------------------------------------ changing
    def add(self, record: Record, quota: Quota) -> str:
        """Store the record; returns its id, or the id of the tenant's identical upload (store nothing
        then). UploadQuotaExceeded past the tenant's quota."""
        kind = self._kind(record)
        dedupe = f"{kind}:{record.dedupe_key}" if record.dedupe_key else ""
        expiry = time.time() + quota.ttl_seconds
        outcome, value = self._add(
            keys=[self._record_prefix(kind) + record.id, self._index(kind, record.tenant), self._usage(record.tenant),
                  self._dedupe(record.tenant), self._retention()],
            args=[record.id, record.model_dump_json(), record.created_at.timestamp(), dedupe, record.bytes,
                  quota.max_count, quota.max_bytes, expiry, f"{kind}:{record.id}", self._record_prefix(kind)])
        outcome, value = _text(outcome), _text(value)
        if outcome in ("count", "bytes"):
            raise UploadQuotaExceeded(outcome, int(value))
        return value

    def delete(self, kind: Kind, upload_id: str, tenant: str, *, keep_seconds: int = 0) -> bool:
        """Delete the tenant's upload (False: there is none). UploadInUse while a queued or running job
        names it (with keep_seconds, its retention is pushed that far into the future then)."""
        record = self.get(kind, upload_id, tenant)
        if record is None:
            return False
        dedupe = f"{kind}:{record.dedupe_key}" if record.dedupe_key else ""
        outcome, value = self._delete(
            keys=[self._record_prefix(kind) + upload_id, self._index(kind, tenant), self._usage(tenant),
                  self._dedupe(tenant), self._retention(), self.keys.tenant_active(tenant)],
            args=[upload_id, f"{kind}:{upload_id}", self.keys.job(""), record.bytes, dedupe,
                  str(time.time() + keep_seconds) if keep_seconds else ""])
        if _text(outcome) == "in_use":
            raise UploadInUse(_text(value))
        return _text(outcome) == "deleted"

    def touch(self, kind: Kind, upload_id: str, ttl_seconds: int) -> None:
        """A job names the upload: it is kept `ttl_seconds` from now."""
        self.redis.zadd(self._retention(), {f"{kind}:{upload_id}": time.time() + ttl_seconds}, xx=True)

    def due(self, limit: int = 100) -> list[tuple[Kind, str]]:
        """(kind, id) of uploads past their retention."""
        members = self.redis.zrangebyscore(self._retention(), "-inf", time.time(), 0, limit)
        due: list[tuple[Kind, str]] = []
        for member in members:
            kind, _, upload_id = _text(member).partition(":")
            if kind in ("model", "dataset"):
                due.append(("model" if kind == "model" else "dataset", upload_id))
        return due

    def expire(self, kind: Kind, upload_id: str, ttl_seconds: int) -> bool:
        """Retention's delete: any tenant's upload by id; in use: kept another `ttl_seconds`. True if deleted."""
        raw = self.redis.get(self._record_prefix(kind) + upload_id)
        if raw is None:
            self.redis.zrem(self._retention(), f"{kind}:{upload_id}")
            return False
        tenant = (CheckpointRecord if kind == "model" else DatasetRecord).model_validate_json(raw).tenant
        try:
            return self.delete(kind, upload_id, tenant, keep_seconds=ttl_seconds)
        except UploadInUse:
            return False


class DatasetStore:
    """The dataset records of UploadStore, under the interface the API and the worker read them with."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.uploads = UploadStore(client, prefix)
        self.redis = client

    def get(self, dataset_id: str, tenant: str) -> DatasetRecord | None:
        record = self.uploads.get("dataset", dataset_id, tenant)
        return record if isinstance(record, DatasetRecord) else None

    def list(self, tenant: str, limit: int = 100) -> list[DatasetRecord]:
        return [r for r in self.uploads.listed("dataset", tenant, limit) if isinstance(r, DatasetRecord)]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
