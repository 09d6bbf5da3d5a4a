"""The job store: records in Redis, the job lifecycle (one atomic state machine) and fair dispatch to RQ.

A storage adapter of its own (DESIGN §4), shared by the API (create, read, cancel) and the workers
(start, progress, finish, release, reap). Torch-free; it talks to Redis and writes RQ deliveries.
"""
