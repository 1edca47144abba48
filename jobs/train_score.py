"""spark-submit entry point of the train_score stage."""
from markdown_pricing.stages import job_entrypoint, train_score

if __name__ == "__main__":
    raise SystemExit(job_entrypoint("train_score", train_score.run))
