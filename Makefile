# The two commands a newcomer needs: `make demo` runs the product on a real one-node cluster
# on this machine, `make test` runs the whole test suite. Both install what they need first
# and need root (containerd, a kubelet and a bridge of their own).

SHELL := /bin/bash
TOOLS_BIN := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pod-identity-webhook/bin
export PATH := $(TOOLS_BIN):$(PATH)

.PHONY: test tools image beside-image lint unit real-cluster real-node soak demo demo-down bench bench-load bench-node render-deploy fuzz fuzz-smoke

## Build helm (3 and 4), promtool, etcd and Kubernetes from their Go modules (cached after the
## first run); Debian's containerd, runc, CNI plugins and buildah for the local node; the
## differential test's driver against the reference webhook's module.
tools:
	hack/install-helm.sh
	hack/install-promtool.sh
	hack/install-control-plane.sh
	hack/install-node.sh
	hack/install-reference.sh

## The container image, as a docker-archive: target/image/pod-identity-webhook.tar.
# `make test` runs this beside other builds with its output held until it ends, so make keeps
# its job slots from the recipe and cargo is told of none (it would warn) and uses every core.
image:
	env -u MAKEFLAGS -u MFLAGS hack/build-image.sh

## fmt + clippy, the image, every fuzz target briefly, then every test: unit, golden, property,
## server, hostile-client, chart, alerts (promtool), real-cluster (URL mode) and real-node (the
## image on a one-node cluster). Says how long each phase took (hack/timed.sh). The builds run
## side by side: the image's whole-program optimisation keeps one core busy for minutes, so
## lint, the test build and the fuzz targets share the other, at a lower priority so that they
## do not lengthen the image's build; theirs shows as they go, the image's when it ends.
PHASE = @hack/timed.sh
# The image's binary (`make image`): the suites that run the server as a process of its own
# run it, so what they measure is what ships.
IMAGE_BINARY := $(CURDIR)/target/$(shell uname -m)-unknown-linux-gnu/release/pod-identity-webhook
test:
	@hack/timed.sh --start
	$(PHASE) tools $(MAKE) --no-print-directory tools
	$(PHASE) builds $(MAKE) --no-print-directory -j2 --output-sync=target image beside-image
	$(PHASE) tests env PIW_REQUIRE_TOOLS=1 PIW_WEBHOOK_BINARY=$(IMAGE_BINARY) cargo test --locked
	@hack/timed.sh --summary

# What `make test` builds beside the image, niced: lint first (it fails soonest), then the
# tests (the same build directory, so one after the other), then the fuzz targets.
beside-image:
	env -u MAKEFLAGS -u MFLAGS nice -n 10 $(MAKE) --no-print-directory lint
	env -u MAKEFLAGS -u MFLAGS nice -n 10 cargo test --locked --no-run
	env -u MAKEFLAGS -u MFLAGS nice -n 10 $(MAKE) --no-print-directory fuzz-smoke

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings
	cd fuzz && cargo +nightly fmt -- --check
	cd fuzz && cargo +nightly clippy --locked --all-targets -- -D warnings

## Every fuzz target for FUZZ_SECONDS each (default 10), seeded from tests/fixtures, under
## AddressSanitizer; needs the nightly toolchain (cargo-fuzz is installed if missing).
FUZZ_SECONDS ?= 10
fuzz:
	hack/fuzz.sh $(FUZZ_SECONDS)

## What `make test` runs: every target for 5 seconds without a sanitizer (a panic, hang or
## out-of-memory still fails), in a build of its own that is quicker to make from clean.
fuzz-smoke:
	env -u MAKEFLAGS -u MFLAGS FUZZ_SANITIZER=none hack/fuzz.sh 5

## The soak (docs/hardening.md, "The soak"): the image on a one-node cluster, pods created
## at 20/s for SOAK_SECONDS (default 600) while a webhook pod restarts every minute (a rollout,
## a pod deleted, its container SIGKILLed, in turn), ServiceAccount roles change every 30 s
## and the API server restarts once; every stored pod is checked and the figures printed.
## `make test` runs the same on a short schedule. Needs root; compiles first, then waits its
## turn for the machine's node lock (NODE_LOCK).
SOAK_SECONDS ?= 600
SOAK_RESTART_EVERY ?= 60
SOAK_ROLE_EVERY ?= 30
NODE_LOCK ?= /tmp/piw-real-node.lock
soak: tools image
	cargo test --locked --test it --no-run
	flock -o $(NODE_LOCK) env PIW_REQUIRE_TOOLS=1 PIW_SOAK_SECONDS=$(SOAK_SECONDS) \
	  PIW_SOAK_RESTART_EVERY=$(SOAK_RESTART_EVERY) PIW_SOAK_ROLE_EVERY=$(SOAK_ROLE_EVERY) \
	  cargo test --locked --test it -- real_node::soak:: --nocapture

## Run it: build the image, start a one-node cluster, helm install the chart from the image,
## run a pod under examples/serviceaccount.yaml and show from inside it what was injected.
## Leaves the cluster up (DEMO_TEARDOWN=1: not).
demo:
	hack/demo.sh

## Stop what `make demo` left running.
demo-down:
	hack/demo.sh down

## Only the tests that need no external tools (no helm, etcd or kube-apiserver): the library's
## unit tests and every module of the integration-test binary but chart, real_cluster, real_node.
## The differential test runs when `make tools` has built its driver, and says SKIPPED if not.
unit:
	cargo test --locked --lib --test it -- --skip chart:: --skip real_cluster:: --skip real_node::

## The real-cluster suite alone (a local kube-apiserver and etcd; logs in target/tmp/).
real-cluster: tools
	PIW_REQUIRE_TOOLS=1 cargo test --locked --test it -- real_cluster::

## The real-node suite alone: the image installed by the chart on a local node, pods that run.
real-node: tools image
	PIW_REQUIRE_TOOLS=1 cargo test --locked --test it -- real_node::

## Benchmarks: the engine (criterion), the request path over TLS, cache memory.
bench:
	cargo bench --bench engine
	cargo bench --bench request_path
	cargo bench --bench cache_memory

## The load benchmark: ours, a null webhook and the reference webhook (built from its Go
## module, cached) on one core, h2load on the other; installs h2load if missing.
bench-load:
	benches/load.sh

## Pods created per second through a real API server with the webhook called and not
## called: the image on a one-node cluster (needs root).
bench-node: tools image
	benches/pod_rate.sh

## Regenerate deploy/ from the chart.
render-deploy:
	hack/render-deploy.sh
