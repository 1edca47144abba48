"""spark-submit entry point of the publish stage."""

from markdown_pricing.stages import publish_job
from markdown_pricing.stages.entrypoint import job_entrypoint

if __name__ == "__main__":
    raise SystemExit(job_entrypoint("publish", publish_job.run))
