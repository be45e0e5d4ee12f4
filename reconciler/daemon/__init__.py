"""`tuneops reconcile`: the loop that keeps a branch converged through the project façade, its
leadership, HTTP endpoints, metrics and notifications."""
