"""The Kubernetes backend: rendering and validating manifests, the API client, reading Jobs and
Deployments as observations, and the Lease that elects one daemon."""
