"""HTTP API, auth, uploads, dashboard, CLI client and CI gate. Never imports torch (issue: the service)."""
