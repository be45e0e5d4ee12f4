"""The embedded local backend: jobs as supervised subprocesses in a SQLite process table, model
servers behind a stable front port per Deployment."""
