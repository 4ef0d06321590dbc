"""Prometheus exporter for NAVER Cloud Platform CLOVA NSML runs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nsml-exporter")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"
