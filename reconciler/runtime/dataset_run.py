"""`tuneops run dataset`: prepare the splits, then record them in MLflow with our digest."""

from __future__ import annotations

from pathlib import Path

from reconciler.jobs.jobfile import JobFile
from reconciler.runtime.dataset import prepare_dataset
from reconciler.tracking import vocabulary as tracking


def run_dataset(job: JobFile) -> Path:
    """Check that MLflow answers, prepare (a bad source fails before any run exists), then open
    the run and log the prepared data as an MLflow dataset whose digest is our full-content one."""
    from reconciler.runtime.lineage import ensure_experiment, open_run

    ensure_experiment(job)
    manifest = prepare_dataset(job)
    output = job.output_dir
    run = open_run(job)
    try:
        run.log_params({"source": manifest.source, "schemaType": manifest.schema_type,
                        **{f"split.{name}": rows for name, rows in manifest.rows.items()}})
        run.log_metrics({**{f"rows_{name}": rows for name, rows in manifest.rows.items()},
                         **{f"dropped_{rule}": count for rule, count in manifest.dropped.items()},
                         "dropped_rows": sum(manifest.dropped.values())})
        for split, context in (("train", "training"), ("validation", "validation"), ("test", "test")):
            if manifest.rows.get(split):
                run.log_dataset(job.name, digest=manifest.digest, source=str(output / f"{split}.parquet"),
                                context=context, rows=manifest.rows[split],
                                schema_type=manifest.schema_type, columns=manifest.columns,
                                split_digest=manifest.split_digests[split])
        run.log_artifact(output / "manifest.json")
        run.set_tags({tracking.TAG_DATASET_DIGEST: manifest.digest})
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish()
    return output
