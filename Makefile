# Every target installs what it needs on first use and is a no-op install the second time.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The stamp changes whenever pyproject.toml does, so dependency edits reinstall exactly once.
DEPS_STAMP := $(VENV)/.deps-$(shell sha1sum pyproject.toml | cut -c1-12)
SYSTEM_STAMP := .cache/system-deps.ok
# The sglang wheel the plugin tests read as source, fetched once by the test set-up (tests never download).
WHEEL_STAMP := .cache/sglang-wheel/.fetched
PROFILE ?= default
MARK ?=
PYTEST_ARGS ?=
# What `make test` runs without MARK: every tier but the controllers on real traffic (`make test-controllers`).
DEFAULT_MARK = not controllers
ROLLOUT_ARGS ?=

.PHONY: help canary rollback abort pause resume promote status test test-setup test-unit test-integration test-e2e lint setup system-deps \
	bench-mm bench-plugin bench-gates bench-loadtest bench-backend bench-rollout bench-serving bench-gateway images test-images test-controllers helm-bin helm-lint helm-docs k8s-build k8s-up test-k8s \
	ci-gate actionlint-bin controllers-bin

help:
	@echo "make canary [PROFILE=quick] [ROLLOUT_ARGS=...]  run a canary rollout (embedded stack unless a cluster is configured)"
	@echo "make rollback                restore 100% traffic to baseline (make abort: the same)"
	@echo "make pause|resume [REASON=]  hold the rollout at its current weights / let it go on"
	@echo "make promote [FORCE=1]       skip the remaining steps: 100% canary (refused while a gate fails)"
	@echo "make status                  show the current rollout state"
	@echo "make test [MARK=expr]        run the test suite (all tiers, or one: MARK=integration)"
	@echo "make test-controllers        Argo Rollouts / Flagger on real traffic at default timing (hours)"
	@echo "make lint                    ruff and mypy"
	@echo "make images                  container images with podman, no Docker engine (docs/images.md)"
	@echo "make bench-mm|bench-plugin|bench-gates|bench-loadtest|bench-backend|bench-rollout|bench-serving|bench-gateway   benchmarks (BENCH_ARGS=...)"

$(DEPS_STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.deps-* && touch $@

$(SYSTEM_STAMP): scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	@mkdir -p $(dir $@) && touch $@

setup: $(DEPS_STAMP) $(SYSTEM_STAMP)

$(WHEEL_STAMP): $(DEPS_STAMP) sglang_plugin/manifest.py sglang_plugin/wheel.py
	$(PY) -m sglang_plugin.wheel
	@touch $@

test-setup: setup $(WHEEL_STAMP)

system-deps: $(SYSTEM_STAMP)

canary: setup
	$(PY) -m rollout run --profile $(PROFILE) $(ROLLOUT_ARGS)

rollback: setup
	$(PY) -m rollout rollback --reason "$${REASON:-make rollback}"

abort: setup
	$(PY) -m rollout abort --reason "$${REASON:-make abort}"

pause: setup
	$(PY) -m rollout pause --reason "$${REASON:-make pause}"

resume: setup
	$(PY) -m rollout resume --reason "$${REASON:-make resume}"

promote: setup
	$(PY) -m rollout promote --reason "$${REASON:-make promote}" $(if $(FORCE),--force)

status: setup
	$(PY) -m rollout status

# The pull-request check: baseline vs candidate at 50/50, gates once (CI_GATE_ARGS="--duration 60 ...").
ci-gate: setup
	$(PY) -m rollout ci-gate $(CI_GATE_ARGS)

# actionlint (validates ci-templates/) is built from its Go module into .cache/bin (first use only).
actionlint-bin:
	@bash tools/install-actionlint.sh

# The k8s tier needs the local control plane and the Gateway API data plane (tools/k8s/build.sh,
# tools/traefik/build.sh; cached); built unless MARK leaves k8s out.
K8S_WANTED = $(if $(MARK),$(if $(findstring not k8s,$(MARK)),,$(findstring k8s,$(MARK))$(findstring images,$(MARK))$(findstring controllers,$(MARK))),all)
# The images tier runs the toolkit image (tools/images.py: built once per content hash, then a no-op); the
# k8s tier's real node runs its server pods on it.
IMAGES_WANTED = $(if $(MARK),$(if $(findstring not images,$(MARK)),,$(findstring images,$(MARK))),all)
test: test-setup helm-bin actionlint-bin
	@$(if $(K8S_WANTED),bash tools/k8s/build.sh && bash tools/k8s/istio-crds.sh && bash tools/traefik/build.sh)
	@$(if $(K8S_WANTED),$(MAKE) --no-print-directory controllers-bin)
	@$(if $(IMAGES_WANTED)$(K8S_WANTED),$(PY) tools/images.py build toolkit)
	$(PY) -m pytest -m "$(or $(MARK),$(DEFAULT_MARK))" $(PYTEST_ARGS)

# The fast tier: no local servers, cluster, images or built binaries (under 2 minutes warm).
test-unit: test-setup
	$(PY) -m pytest -m "not integration and not e2e and not k8s and not images and not binaries" $(PYTEST_ARGS)
test-integration: MARK = integration
test-integration: test
test-e2e: MARK = e2e
test-e2e: test
test-k8s: MARK = k8s and not controllers
test-k8s: test
# Argo Rollouts / Flagger deciding on real traffic at their exported timing: hours on 2 cores, so not part
# of `make test` (docs/helm.md has the latest figures).
test-controllers: MARK = controllers
test-controllers: test
test-images: MARK = images
test-images: test

lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

# Benchmarks: each prints a side-by-side table and writes it under reports/.
bench-mm: setup
	$(PY) -m bench.mminputs $(BENCH_ARGS)

bench-plugin: setup
	$(PY) -m bench.plugin $(BENCH_ARGS)

bench-gates: setup
	$(PY) -m bench.gates $(BENCH_ARGS)

bench-loadtest: setup
	$(PY) -m bench.loadtest $(BENCH_ARGS)

bench-backend: setup
	$(PY) -m bench.backend $(BENCH_ARGS)

bench-rollout: setup
	$(PY) -m bench.rollout $(BENCH_ARGS)

bench-serving: setup
	$(PY) -m bench.serving $(BENCH_ARGS)

# Streams through a real Traefik (built once by tools/traefik/build.sh): early ends and failures, with and
# without the chart's request buffering (docs/helm.md).
bench-gateway: setup
	@bash tools/traefik/build.sh
	$(PY) -m bench.gateway $(BENCH_ARGS)

# Container images with podman (ENGINE=docker also works), no Docker engine or registry needed: the toolkit
# (exported to build/images/), and baseline/candidate when SGLANG_IMAGE is in local storage. IMAGES=toolkit|arms.
images: $(DEPS_STAMP)
	$(PY) tools/images.py build $(IMAGES)

# Helm charts: helm is built from its Go module into .cache/bin (first use only).
CHART := helm/sglang-vlm-canary
helm-bin:
	@bash tools/install-helm.sh

helm-lint: helm-bin
	@# lint only logs a template's `fail`; rendering each scenario makes it an error.
	@for f in $(CHART)/ci/*-values.yaml; do echo "helm lint $$f"; \
	  .cache/bin/helm lint --strict --kube-version 1.32.0 $(CHART) -f $$f >/dev/null && \
	  .cache/bin/helm template lint $(CHART) --kube-version 1.32.0 -f $$f >/dev/null || exit 1; done

# Regenerates the chart README's values table from the values file.
helm-docs: $(DEPS_STAMP)
	$(PY) tools/helm_docs.py $(CHART)

# Local Kubernetes control plane and Traefik for the k8s test tier (first build: long; then cached).
k8s-build:
	@bash tools/k8s/build.sh
	@bash tools/k8s/istio-crds.sh
	@bash tools/traefik/build.sh

# Argo Rollouts and Flagger, which the k8s tier runs against the exported gates (first use only).
controllers-bin:
	@bash tools/install-flagger.sh
	@bash tools/install-argo-rollouts.sh

k8s-up: k8s-build helm-bin $(DEPS_STAMP)
	$(PY) tools/k8s/cluster.py up
