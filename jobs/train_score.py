"""spark-submit entry point of the train_score stage."""

from markdown_pricing.stages import train_score_job
from markdown_pricing.stages.entrypoint import job_entrypoint

if __name__ == "__main__":
    raise SystemExit(job_entrypoint("train_score", train_score_job.run))
