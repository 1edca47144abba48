"""spark-submit entry point of the etl stage."""
from markdown_pricing.stages import etl, job_entrypoint

if __name__ == "__main__":
    raise SystemExit(job_entrypoint("etl", etl.run))
