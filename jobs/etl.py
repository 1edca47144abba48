"""spark-submit entry point of the etl stage."""

from markdown_pricing.stages import etl_job
from markdown_pricing.stages.entrypoint import job_entrypoint

if __name__ == "__main__":
    raise SystemExit(job_entrypoint("etl", etl_job.run))
