# syntax=docker/dockerfile:1
# opsync's container image: `docker build -t ghcr.io/opsync/opsync:0.1.0 .` (the tag the Helm chart defaults to:
# its appVersion, kept equal to pyproject.toml's version).
#
# Runs as UID/GID 65532 with a read-only root filesystem: nothing is written to the image at run time (bytecode
# is compiled at build time, HOME and temporary files are /tmp, an emptyDir in the chart).

# The base image by digest (a tag can be re-pointed; a digest cannot). The digest is the multi-platform index
# of python:3.11.10-slim-bookworm. To bump it (monthly, and for every Python or Debian security release):
#   docker buildx imagetools inspect python:3.11-slim-bookworm    # "Digest:" of the index, and its version
# then set both the version and the digest here, rebuild, and run the chart's image tests. (Renovate's or
# Dependabot's "docker" manager can open these bumps.)
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

# Install the locked dependencies (every file checked against requirements.lock's hashes: pip refuses anything
# else), then opsync's own wheel without resolving anything; only the virtualenv is copied on. pip compiles the
# bytecode as it installs, so a read-only filesystem costs nothing at start-up; the installers are removed
# afterwards, and `opsync version` proves the entry point works. Regenerate the lock after changing
# pyproject.toml's dependencies:
#   pip-compile --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
#     --output-file=requirements.lock pyproject.toml
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.lock ./
RUN python -m venv /opt/opsync \
 && /opt/opsync/bin/pip install --require-hashes --no-deps --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY opsync ./opsync
COPY onepassword_access ./onepassword_access
COPY controllers ./controllers
# The wheel's build backend (setuptools, from pyproject.toml's build-system) is a build-time tool only; nothing
# of it reaches the image.
RUN /opt/opsync/bin/pip wheel --no-deps --wheel-dir /dist . \
 && /opt/opsync/bin/pip install --no-deps /dist/opsync-*.whl \
 && /opt/opsync/bin/pip check \
 && /opt/opsync/bin/pip uninstall --yes pip setuptools \
 && /opt/opsync/bin/opsync version

# The same base image, so the virtualenv's interpreter link (/usr/local/bin/python3.11) resolves.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="opsync" \
      org.opencontainers.image.description="Keep Kubernetes Secrets in sync with 1Password" \
      org.opencontainers.image.source="https://github.com/opsync/opsync" \
      org.opencontainers.image.licenses="Apache-2.0"
# The base image's own installers are not needed at run time.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel
COPY --from=builder /opt/opsync /opt/opsync
ENV PATH=/opt/opsync/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
# Numeric, so Kubernetes can verify runAsNonRoot without a passwd entry.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["opsync"]
CMD ["run"]
