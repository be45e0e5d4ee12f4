"""The dashboard: `tuneops ui` and the reconcile daemon serve it, read-only, from the plan and
the actual state the command line reads (docs/ui.md)."""
