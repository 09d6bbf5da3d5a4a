"""One router per resource: jobs, job reports and artifacts, checkpoints, catalog, operations."""
