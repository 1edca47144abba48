#!/usr/bin/env bash
# Submits one job with the Spark settings of an environment from conf/ (the same ones the Luigi tasks use).
# Usage: spark-submit/submit.sh <etl|train_score|publish> --env local|standalone|yarn [--dry-run] [job options]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${MARKDOWN_PYTHON:-$here/.venv/bin/python}"
export MARKDOWN_HOME="${MARKDOWN_HOME:-$here}"
exec "$python" -m markdown_pricing.orchestrate.submit "$@"
