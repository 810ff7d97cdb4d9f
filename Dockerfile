# syntax=docker/dockerfile:1
# opsync's container image for those who build with Docker: `docker build -t ghcr.io/opsync/opsync:0.1.0 .`
# (the tag the Helm chart defaults to: its appVersion, kept equal to opsync/__init__.py's __version__).
#
# `make image` (hack/image.sh) builds the released image without a Docker daemon; both give the same thing,
# and tests/unit/test_image_definition.py keeps them so: Debian bookworm's python3.11 without a shell,
# /opt/opsync holding opsync and exactly requirements.lock, user 65532:65532, entrypoint
# `/usr/bin/python3.11 -m opsync`, command `run`. Nothing is written at run time (bytecode is compiled here),
# so the root filesystem can be read-only; HOME and temporary files are /tmp, an emptyDir in the chart.

# Both base images are pinned by digest (the tag is kept for readers; with a digest, the tag is not used).
# The digests were taken from public repositories pinning these very tags (each digest pinned by several
# independent ones, in 2026), not pulled here: the machine this was written on reaches no registry, so check
# them on the first build that can. To bump them, read the current digest of each tag and replace it:
#   docker buildx imagetools inspect debian:bookworm-slim --format '{{json .Manifest.Digest}}'
#   crane digest gcr.io/distroless/python3-debian12:nonroot
# tests/unit/chart/test_supply_chain.py fails on a FROM that is not pinned by digest.
#
# Debian 12 (bookworm): the suite hack/image.sh extracts its root filesystem from.
ARG BUILD_IMAGE=debian:bookworm-slim@sha256:4724b8cc51e33e398f0e2e15e18d5ec2851ff0c2280647e1310bc1642182655d
# Debian 12's python3.11 and its libraries, without shell or package manager, user 65532 ("nonroot").
ARG RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:nonroot@sha256:7d1042ce588ab97019fe95c24ffca7bc5a82ccdac572511d5e09bda4435c89c5

# The wheel, then the locked dependencies (hashes checked, wheels only) into /opt/opsync, compiled by the
# same python3.11 the runtime image has.
FROM ${BUILD_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE requirements.lock ./
COPY opsync ./opsync
COPY onepassword_access ./onepassword_access
COPY controllers ./controllers
RUN python3.11 -m venv /build \
 && /build/bin/pip wheel --no-deps --wheel-dir /dist . \
 && /build/bin/pip install --target /opt/opsync --only-binary=:all: --no-compile --require-hashes --no-deps \
      -r requirements.lock \
 && /build/bin/pip install --target /opt/opsync --no-compile --no-deps /dist/opsync-*.whl \
 && rm -rf /opt/opsync/bin \
 && python3.11 -m compileall -q /opt/opsync \
 && PYTHONPATH=/opt/opsync python3.11 -m opsync version

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="opsync" \
      org.opencontainers.image.description="Keep Kubernetes Secrets in sync with 1Password" \
      org.opencontainers.image.source="https://github.com/opsync/opsync" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/opsync /opt/opsync
ENV PYTHONPATH=/opt/opsync \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
# Numeric, so Kubernetes can verify runAsNonRoot without a passwd entry.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/bin/python3.11", "-m", "opsync"]
CMD ["run"]
