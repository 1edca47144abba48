"""The benchmark suite (`make bench`): harness, measurements and report."""
