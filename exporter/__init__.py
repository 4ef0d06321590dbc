"""Prometheus exporter for NAVER Cloud Platform CLOVA NSML runs."""

from importlib import import_module

try:  # written by setuptools-scm when the package is built (not in git)
    _built = import_module("._version", __name__)
    __version__: str = _built.__version__
    _node: str = _built.__revision__
except ImportError:  # pragma: no cover - a source tree that was never built
    __version__, _node = "0.0.0+unknown", ""

#: The commit the package was built from, or "unknown".
__revision__ = _node.removeprefix("g") if _node not in ("", "None") else "unknown"
