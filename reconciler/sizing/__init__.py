"""Sizing a fine-tune before it is scheduled: memory per GPU and strategy, FLOPs and GPU-hours,
whether it fits the cluster, and where a base model's shape and a dataset's row count come from."""
