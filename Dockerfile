# nsml-exporter image: the package built from this repo in a venv, copied into a clean slim base.
# Build: docker build -t nsml-exporter .   Run: docker run -p 9877:9877 nsml-exporter --demo

FROM python:3.12.8-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m venv /opt/nsml-exporter \
    && /opt/nsml-exporter/bin/pip install --no-cache-dir /src

FROM python:3.12.8-slim-bookworm
LABEL org.opencontainers.image.title="nsml-exporter" \
      org.opencontainers.image.description="Prometheus exporter for NAVER Cloud CLOVA NSML runs" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/nsml-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/nsml-exporter /opt/nsml-exporter
USER 65534:65534
EXPOSE 9877
ENTRYPOINT ["nsml-exporter"]
