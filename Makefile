# cxop Makefile. Targets keep the kubebuilder vocabulary; every tool is pinned
# and built from the Go module proxy into ./bin (small tools) or the cache
# directory outside the repository (the control plane, see hack/).

# The release is the chart's appVersion; internal/version holds the same
# value (a test keeps them equal). IMG is the one image the manager, the
# collectors and the wave jobs run.
VERSION ?= $(shell sed -n 's/^appVersion: "\(.*\)"$$/\1/p' charts/cxop/Chart.yaml)
IMG ?= ghcr.io/cxop-dev/cxop:$(VERSION)
# make image: the static binary and the tarball. The image's times are the
# commit's time, so two builds of one commit are byte for byte the same.
IMAGE_ARCH ?= $(shell $(GO) env GOARCH)
IMAGE_BIN_DIR ?= $(LOCALBIN)/linux-$(IMAGE_ARCH)
IMAGE_TAR ?= $(LOCALBIN)/cxop-image.tar
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE_LDFLAGS = -s -w -X github.com/cxop-dev/cxop/internal/version.Version=$(VERSION) \
	-X github.com/cxop-dev/cxop/internal/version.imageRef=$(IMG)

# Tool versions.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.1
HELM_VERSION ?= v4.3.1
# The Prometheus Operator whose CRDs the cluster tier installs.
PROMETHEUS_OPERATOR_VERSION ?= v0.85.0

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
CRASH_KILLS ?= 20
CRASH_POWER_LOSSES ?= 1000
CRASH_PG_KILLS ?= 100
CRASH_PG_DB_RESTARTS ?= 5
BENCH_FLAGS ?=
BENCH_PG_ANSWERS ?= 10000000
BENCH_PG_FLAGS ?=
BENCH_OPERATOR_FLAGS ?=

GO ?= go
# Ginkgo prints a spec per line with -v; keep test output readable in CI.
GO_TEST_FLAGS ?= -count=1
export GOTOOLCHAIN ?= local

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate CRDs and RBAC from the API types and markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd:allowDangerousTypes=false paths="./..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	hack/sync-chart.sh

.PHONY: rbac-golden
rbac-golden: manifests helm ## Render the chart's RBAC, cluster-wide and namespaced, into test/chart/testdata (checked in; reviewed as a diff).
	hack/rbac-golden.sh $(HELM)

.PHONY: argocd-health
argocd-health: ## Write config/argocd/argocd-cm.yaml (the Argo CD health checks of cxop's kinds) from config/argocd/health.lua.
	hack/argocd-snippet.sh

.PHONY: generate
generate: controller-gen ## Generate deepcopy code.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt on the tree.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: envtest
envtest: ## Build kube-apiserver, etcd and kubectl from their Go modules (cached; prints the directory).
	@hack/setup-envtest.sh | tail -n 1

.PHONY: test
test: manifests generate vet helm ## Run the unit, envtest, end-to-end and cluster suites against Kubernetes built from source.
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh | tail -n 1)" HELM=$(HELM) PROMTOOL="$$(hack/setup-promtool.sh | tail -n 1)" \
		CHROMIUM="$$(hack/setup-chromium.sh | tail -n 1)" PG_BIN="$$(hack/setup-postgres.sh | tail -n 1)" $(GO) test $(GO_TEST_FLAGS) ./...
	$(MAKE) --no-print-directory fuzz
	$(MAKE) --no-print-directory test-e2e
	$(MAKE) --no-print-directory test-cluster

# Each fuzz target runs FUZZTIME from its committed seed corpus
# (testdata/fuzz/<target> in its package); a release runs them longer
# (docs/collector.md, "Fuzzing"). A count of executions, not a duration:
# with a duration, Go 1.26's fuzz coordinator can fail a clean run with
# "context deadline exceeded" as the time runs out (golang/go#75804).
FUZZTIME ?= 20000x

.PHONY: fuzz
fuzz: ## Run every fuzz target for $(FUZZTIME) executions (FUZZTIME=2000000x for a release).
	@set -e; fuzz() { \
		echo "fuzz: $$2 in $$1 for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$2$$" -fuzztime $(FUZZTIME) "$$1"; \
	}; \
	fuzz ./internal/collector FuzzIngestBody; \
	fuzz ./internal/survey/link FuzzLinkToken; \
	fuzz ./internal/webhook FuzzGuard; \
	fuzz ./internal/store FuzzDecodeRecord

.PHONY: test-e2e
test-e2e: manifests ## Run cxop dev, apply the samples, post data over HTTP and check the numbers kubectl shows.
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh | tail -n 1)" $(GO) test $(GO_TEST_FLAGS) -tags e2e ./test/e2e/ -v -run TestSamplesEndToEnd

.PHONY: test-cluster
test-cluster: image helm ## Start a real single-node cluster (hack/cluster), helm install the built image, run test/cluster in it, remove it.
	$(GO) test -c -tags cluster -o $(LOCALBIN)/cluster.test ./test/cluster
	HELM=$(HELM) CXOP_IMAGE=$(IMG) PROMETHEUS="$$(dirname "$$(hack/setup-promtool.sh | tail -n 1)")/prometheus" \
		PG_BIN="$$(hack/setup-postgres.sh | tail -n 1)" \
		MONITORING_CRDS="$$(GOFLAGS=-mod=mod $(GO) mod download -json github.com/prometheus-operator/prometheus-operator@$(PROMETHEUS_OPERATOR_VERSION) | \
			sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p')/example/prometheus-operator-crd" \
		hack/test-cluster.sh $(LOCALBIN)/cluster.test $(IMAGE_TAR)

.PHONY: cluster-up
cluster-up: image helm ## Start a single-node cluster with no Docker (in its own network namespace) with the cxop image loaded.
	ln -sf $(notdir $(HELM)) $(LOCALBIN)/helm
	hack/cluster/up.sh --image $(IMAGE_TAR)

.PHONY: cluster-down
cluster-down: ## Stop the cluster of cluster-up and remove everything it made.
	hack/cluster/down.sh

.PHONY: verify
verify: manifests generate rbac-golden argocd-health kustomize ## Regenerate everything and fail if the tree differs from what is committed.
	@gofmt_out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$gofmt_out" ]; then echo "gofmt needed:"; echo "$$gofmt_out"; exit 1; fi
	$(GO) mod tidy
	$(KUSTOMIZE) build config/default >/dev/null
	@if [ -n "$$(git status --porcelain)" ]; then \
		echo "The tree differs from what is committed after regeneration:"; \
		git status --porcelain; git --no-pager diff --stat; exit 1; \
	fi

##@ Build

.PHONY: build
build: ## Build the cxop binary into bin/.
	$(GO) build -trimpath -o $(LOCALBIN)/cxop .

.PHONY: image
image: ## Build the cxop image as a tarball ($(IMAGE_TAR)) with no Docker daemon and no base image; prints its digest.
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -buildvcs=false -tags nodev -ldflags "$(IMAGE_LDFLAGS)" -o $(IMAGE_BIN_DIR)/cxop .
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./hack/image -binary $(IMAGE_BIN_DIR)/cxop -ref $(IMG) \
		-platform linux/$(IMAGE_ARCH) -out $(IMAGE_TAR) \
		-label org.opencontainers.image.source=https://github.com/cxop-dev/cxop \
		-label org.opencontainers.image.version=$(VERSION) -label org.opencontainers.image.revision=$(REVISION)

.PHONY: docker-build
docker-build: ## Build the same image with a Docker daemon (see Dockerfile).
	docker build --build-arg VERSION=$(VERSION) --build-arg IMG=$(IMG) --build-arg REVISION=$(REVISION) \
		--build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push $(IMG) with Docker.
	docker push $(IMG)

.PHONY: bench-collector
bench-collector: build ## Measure the collector on loopback: ingest rate, ack p99, discard ceiling, summary p99, restart time.
	$(GO) run ./test/collector/bench -cxop $(LOCALBIN)/cxop $(BENCH_FLAGS)

.PHONY: bench-collector-pg
bench-collector-pg: build ## Two collector replicas over one local PostgreSQL with BENCH_PG_ANSWERS stored answers: ingest, ack p99, summary p99 and the COPY ceiling, medians of three rounds.
	PG_BIN="$$(hack/setup-postgres.sh | tail -n 1)" $(GO) run ./test/collector/benchpg -cxop $(LOCALBIN)/cxop -answers $(BENCH_PG_ANSWERS) $(BENCH_PG_FLAGS)

.PHONY: crash-test
crash-test: build ## SIGKILL the collector under load 20 times, then cut the store's power 1,000 times; print acked=N lost=L dup=D for each.
	$(GO) run ./test/collector/crash -cxop $(LOCALBIN)/cxop -kills $(CRASH_KILLS) -power-loss $(CRASH_POWER_LOSSES)

.PHONY: crash-test-pg
crash-test-pg: build ## Two collector replicas over a throwaway PostgreSQL: SIGKILL them in turn under load (direct, then through PgBouncer), restart the database under load; print acked=N lost=L dup=D for each.
	PG_BIN="$$(hack/setup-postgres.sh | tail -n 1)" $(GO) run ./test/collector/crash -cxop $(LOCALBIN)/cxop -store postgres -kills $(CRASH_PG_KILLS) -db-restarts $(CRASH_PG_DB_RESTARTS)

.PHONY: bench-operator
bench-operator: manifests build ## Create 1,000 then 10,000 Touchpoints and CXTargets; print convergence, manager RSS and idle writes.
	$(GO) run ./test/operator/bench -cxop $(LOCALBIN)/cxop -assets "$$(hack/setup-envtest.sh | tail -n 1)" $(BENCH_OPERATOR_FLAGS)

.PHONY: bench-erasure
bench-erasure: ## Erase a customer with 10,000 records among 500,000 others, five times per run, three runs; prints the median erasure.
	$(GO) test ./internal/store -run '^$$' -bench EraseCustomer -benchtime 5x -count 3

.PHONY: bench-erasure-pg
bench-erasure-pg: ## The same erasure on PostgreSQL (a throwaway server): 10,000 records among 500,000 others, five per run, three runs.
	PG_BIN="$$(hack/setup-postgres.sh | tail -n 1)" $(GO) test ./internal/pgstore -run '^$$' -bench EraseCustomer -benchtime 5x -count 3

.PHONY: bench-surveys
bench-surveys: ## Invite and deliver 5,000 survey invitations on loopback; print deliveries per second and retries.
	$(GO) test ./internal/survey/engine -run '^$$' -bench InviteAndDeliver -benchtime 5000x -count 3

.PHONY: bench-engines
bench-engines: ## Compare Pebble and bbolt on the collector's group-commit workload.
	$(GO) test ./internal/store/enginebench -run '^$$' -bench . -benchtime 2s -count 3

.PHONY: run
run: manifests generate ## Run the manager against the cluster in the current kubeconfig.
	$(GO) run . manager

DEV_DIR ?= .dev

.PHONY: dev
dev: manifests build ## Run a local control plane and the manager with no cluster; state in $(DEV_DIR).
	$(LOCALBIN)/cxop dev --dir $(DEV_DIR) --assets "$$(hack/setup-envtest.sh | tail -n 1)"

##@ Deployment

.PHONY: install
install: manifests kustomize ## Install the CRDs into the cluster in the current kubeconfig.
	$(KUSTOMIZE) build config/crd | kubectl apply --server-side -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Remove the CRDs (and every cxop object) from the cluster.
	$(KUSTOMIZE) build config/crd | kubectl delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests kustomize ## Deploy the manager with the image $(IMG).
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | kubectl apply --server-side -f -

##@ Tools

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Build controller-gen into bin/.
$(CONTROLLER_GEN):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) GOFLAGS=-mod=mod $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv -f $(LOCALBIN)/controller-gen $@

.PHONY: kustomize
kustomize: $(KUSTOMIZE) ## Build kustomize into bin/.
$(KUSTOMIZE):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) GOFLAGS=-mod=mod $(GO) install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	mv -f $(LOCALBIN)/kustomize $@

.PHONY: helm
helm: $(HELM) ## Build helm into bin/.
$(HELM):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) GOFLAGS=-mod=mod $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	mv -f $(LOCALBIN)/helm $@
