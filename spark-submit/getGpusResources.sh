#!/usr/bin/env bash
# Spark's GPU discovery script: prints the GPUs this container may use as {"name": "gpu", "addresses": [...]}.
# With YARN's GPU isolation (cgroups or Docker) a container sees only the GPUs YARN assigned it, so nvidia-smi
# lists exactly those. Shipped with --files and named by spark.executor.resource.gpu.discoveryScript.
set -euo pipefail
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | awk 'NF {printf "%s\"%s\"", sep, $1; sep = ","}')
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
