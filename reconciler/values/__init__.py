"""Value types shared by the project settings and the specs: strict scalars, Kubernetes names."""
