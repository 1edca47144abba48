"""spark-submit entry point of the publish stage."""
from markdown_pricing.stages import job_entrypoint, publish

if __name__ == "__main__":
    raise SystemExit(job_entrypoint("publish", publish.run))
