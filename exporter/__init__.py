"""Prometheus exporter for NAVER Cloud Platform CLOVA NSML runs."""

try:  # written by setuptools-scm when the package is built
    from ._version import __revision__ as _node
    from ._version import __version__
except ImportError:  # pragma: no cover - a source tree that was never built
    __version__, _node = "0.0.0+unknown", ""

#: The commit the package was built from (git's short hash), or "unknown".
__revision__ = _node.removeprefix("g") if _node not in ("", "None") else "unknown"
