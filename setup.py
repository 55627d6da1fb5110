"""Packaging for sAsync (SQLAlchemy made asynchronous for Twisted) and AsynQueue."""

from pathlib import Path

from setuptools import find_packages, setup

readme = Path(__file__).with_name("README.md")

setup(
    name="sAsync",
    # The one source of the version: sasync.__version__ and
    # asynqueue.__version__ read it from the installed distribution.
    version="0.20.0.dev0",
    description="SQLAlchemy made asynchronous for Twisted, on the AsynQueue task queue",
    long_description=readme.read_text(encoding="utf-8") if readme.exists() else "",
    long_description_content_type="text/markdown",
    # PEP 639: setuptools >= 77 writes it as License-Expression.
    license_expression="Apache-2.0",
    license_files=["LICENSE"],
    python_requires=">=3.11",
    project_urls={
        "Original sAsync": "https://github.com/edsuom/sAsync",
        "Original AsynQueue (superseded)": "https://github.com/edsuom/AsynQueue",
    },
    packages=find_packages(include=["sasync", "sasync.*", "asynqueue", "asynqueue.*"]),
    package_data={"sasync": ["py.typed"], "asynqueue": ["py.typed"]},
    install_requires=[
        "twisted>=24.3",
        "sqlalchemy>=2.0,<2.2",
        "psycopg2-binary>=2.9",
        # psycopg 3, for postgresql+psycopg:// URLs (psycopg2 stays the default);
        # 3.2: notifies(timeout=) and cancel_safe().
        "psycopg[binary]>=3.2",
        "zope.interface>=6",
    ],
    extras_require={
        "mysql": ["pymysql>=1.1"],
        "migrations": ["alembic>=1.13"],
        "metrics": ["prometheus_client>=0.20"],
        "otel": ["opentelemetry-api>=1.20"],
        # asynqueue.wire's TLS (pyOpenSSL, service_identity).
        "wire": ["twisted[tls]"],
        "test": [
            "twisted[tls]",
            "pymysql>=1.1",
            "alembic>=1.13",
            "prometheus_client>=0.20",
            "opentelemetry-api>=1.20",
            "opentelemetry-sdk>=1.20",
            "psycopg[binary]>=3.2",
            "pytest>=8",
            "hypothesis>=6.100",
            "treq>=24",
            "psutil>=5.9",
            "matplotlib>=3.8",
        ],
        "lint": [
            "ruff>=0.6",
            "mypy>=1.11",
            "mypy-zope>=1.0.5",
            "types-psycopg2",
            "types-PyMySQL",
        ],
        "docs": ["pydoctor>=24.3"],
        # CI's package check (scripts/_package_check.py): build, twine check.
        # twine 6.1: Metadata-Version 2.4 (License-Expression).
        "release": ["build>=1.2", "twine>=6.1"],
        "demo": ["matplotlib>=3.8"],
        "bench": [
            "prometheus_client>=0.20",
            "opentelemetry-api>=1.20",
            "asyncpg>=0.29",
            "txpostgres>=1.7",
            "sqlalchemy[asyncio]>=2.0,<2.2",
            "matplotlib>=3.8",
            "psutil>=5.9",
            "pymysql>=1.1",
        ],
    },
    entry_points={"console_scripts": ["sasync = sasync.__main__:main"]},
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: Twisted",
        "Intended Audience :: Developers",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Database",
        "Topic :: Software Development :: Libraries",
        "Typing :: Typed",
    ],
)
