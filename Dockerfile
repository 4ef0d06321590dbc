# nsml-exporter image: the package built from this repo, its dependencies installed from
# requirements.txt with their hashes, in a venv copied into a clean slim base.
# Build: docker build --build-arg VERSION=0.2.0 --build-arg REVISION="$(git rev-parse HEAD)" .
# Run:   docker run -p 9877:9877 IMAGE --demo

FROM python:3.13.13-slim-trixie AS build
# The build context has no .git: the version and the revision come from the build arguments.
ARG VERSION=0.0.0
ARG REVISION=unknown
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.txt requirements-build.txt ./
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes --no-deps \
        -r requirements-build.txt \
    && python -m venv /opt/nsml-exporter \
    && /opt/nsml-exporter/bin/pip install --no-cache-dir --require-hashes --no-deps \
        -r requirements.txt
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN SETUPTOOLS_SCM_PRETEND_VERSION_FOR_NSML_EXPORTER="$VERSION" \
    SETUPTOOLS_SCM_PRETEND_METADATA_FOR_NSML_EXPORTER="{node=\"g$REVISION\"}" \
    /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /opt/nsml-exporter/bin/pip install --no-cache-dir --no-deps /wheels/nsml_exporter-*.whl

FROM python:3.13.13-slim-trixie
ARG VERSION=0.0.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=https://github.com/nsml-exporter/nsml-exporter
LABEL org.opencontainers.image.title="nsml-exporter" \
      org.opencontainers.image.description="Prometheus exporter for NAVER Cloud CLOVA NSML runs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.created="$CREATED" \
      org.opencontainers.image.source="$SOURCE"
ENV PATH=/opt/nsml-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/nsml-exporter /opt/nsml-exporter
USER 65534:65534
EXPOSE 9877
ENTRYPOINT ["nsml-exporter"]
