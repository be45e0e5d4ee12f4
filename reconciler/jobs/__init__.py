"""The job file a `tuneops run` reads (jobfile.py) and the builder that writes one from a spec and
its built upstreams (builder.py)."""
