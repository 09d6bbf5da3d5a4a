"""Worker: takes jobs from Redis, runs them, reports progress, stores artifacts (issue: the service)."""
