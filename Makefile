# lambda-cnn — every entry point. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Outside the clone, so CI and repeated runs reuse the build.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/lambda-cnn/target
# The project's shared copy when it is there (CI, this team's machines), else `make data`'s.
MNIST_DIR ?= $(if $(wildcard ../shared/mnist/t10k-labels-idx1-ubyte.gz),$(abspath ../shared/mnist),$(abspath data/mnist))
export MNIST_DIR
WEIGHTS := model-weights/mnist-cnn.safetensors
CLI := $(CARGO_TARGET_DIR)/release/lambda-cnn
DEPLOY := $(CARGO_TARGET_DIR)/release/deploy
LOCAL := $(CARGO_TARGET_DIR)/release/local
# The local stack's job (crates/local): make run, tune, batch and bench-seed are it with more flags.
LOCAL_RUN = $(LOCAL) run --deploy $(DEPLOY) --predict $(FUNCTIONS_DIR)/predict --train $(FUNCTIONS_DIR)/train \
  --arch $(ARCH) --venv $(VENV) --mnist-dir "$(MNIST_DIR)"
CARGO := cargo
MNIST_MIRRORS := https://ossci-datasets.s3.amazonaws.com/mnist https://storage.googleapis.com/cvdf-datasets/mnist
MNIST_FILES := train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte
# Local stand-ins the tests start themselves: the Lambda Runtime API emulator (cargo-lambda)
# and the AWS API emulator (moto), both from PyPI, in a project venv. The venvs live outside
# the clone, one per set of pins (TOOL_CACHE/venv-<hash>), and .venv links to its own: a
# fresh clone (CI) reuses them instead of installing again.
TOOL_CACHE ?= $(HOME)/.cache/lambda-cnn
VENV := .venv
PYTHON ?= python3
TOOLS_STAMP := $(VENV)/.tools-4
# selenium: drives Debian's Chromium through Debian's chromedriver (no browser download) for
# the digit page's test.
# cloudsplaining, parliament: the IAM policy auditors the deployer policy must pass.
PY_TOOLS := cargo-lambda==1.9.2 moto[server]==5.2.5 selenium==4.50.0 cloudsplaining==0.9.1 parliament==1.6.4

# AWS's Lambda Runtime Interface Emulator for the local data plane (`local dataplane`,
# crates/local): the two static binaries PyPI's aws-sam-cli ships, taken out of its wheel
# (SAM itself is not installed), cached in TOOL_CACHE by version, linked at .rie.
RIE_FROM := aws-sam-cli==1.170.0
RIE_DIR := .rie

# LocalStack (community, host mode, offline) for `AWS_EMULATOR=localstack`: localstack-core
# needs Python >= 3.12, and these pins to install and start here.
LOCALSTACK_VENV := .venv-localstack
LOCALSTACK_STAMP := $(LOCALSTACK_VENV)/.localstack-1
# pyenv's own builds first: its shims fail for versions not selected.
LOCALSTACK_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3 $(HOME)/.pyenv/versions/3.12*/bin/python3) $(shell command -v python3.13 python3.12 2>/dev/null))
LOCALSTACK_PKGS := localstack-core[runtime]==2026.3.0 cbor2<6 pyopenssl==25.3.0 cryptography>=45.0.7,<47 service_identity

# arm64 (Graviton): the functions cross-built on this machine — Debian's aarch64 gcc links them
# against Debian's arm64 glibc (.cargo/config.toml), the image carries that libc — and the
# library's tests of the arm64 build run under qemu-user. `ARCH=arm64` makes `make build` and
# `make run` do the arm64 build; `make test` always tests both.
ARCH ?= $(if $(filter aarch64 arm64,$(shell uname -m)),arm64,x86_64)
ARM64_TARGET := aarch64-unknown-linux-gnu
ARM64_DIR := $(CARGO_TARGET_DIR)/$(ARM64_TARGET)/release
# Installs what `$(1)` lists (`command-or-/file:Debian-package` items) and this machine lacks:
# with apt-get, as root, one apt-get at a time (make test installs while it builds); else runs
# `$(2)` with `$$missing` set to the packages.
define debian_packages
	@missing=""; for t in $(1); do \
	  what=$${t%%:*}; if [ "$${what:0:1}" = / ]; then [ -e "$$what" ]; else command -v $$what >/dev/null; fi || missing="$$missing $${t##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing from Debian:$$missing"; mkdir -p $(TOOL_CACHE); \
	    flock $(TOOL_CACHE)/apt.lock sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null"; \
	  else $(2); fi; \
	fi
endef
NO_PROTOC = echo "missing: protoc — install it (e.g. sudo apt-get install protobuf-compiler, or set PROTOC), then run make again" >&2; exit 1
MISSING_STOPS = echo "missing:$$missing — install these packages (e.g. sudo apt-get install$$missing), then run make again" >&2; exit 1

# command-or-file:Debian package
CROSS_TOOLS := aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu /usr/aarch64-linux-gnu/lib/libc.so.6:libc6-dev-arm64-cross qemu-aarch64-static:qemu-user-static
# The library's tests on arm64, selected with the functions and without `import` so that cargo
# resolves the same features as for the functions' build (tokio's, serde's, zip's...): they
# then share every dependency, instead of compiling candle and the AWS SDK a second time
# (5 min cold). `import` reads files on the user's machine, in portable Rust: x86_64 tests it.
ARM64_LIB_TESTS := --target $(ARM64_TARGET) -p lambda-cnn -p lambda-cnn-core -p lambda-cnn-predict -p lambda-cnn-train \
  --no-default-features --lib --bins
ifeq ($(ARCH),arm64)
FUNCTIONS_DIR := $(ARM64_DIR)
else ifeq ($(ARCH),x86_64)
FUNCTIONS_DIR := $(CARGO_TARGET_DIR)/release
else
$(error ARCH=$(ARCH): Lambda runs x86_64 or arm64)
endif

# The seed's TensorFlow: the peers' (bench-peers) and the seed's Lambda image's (bench-seed).
TF_PIN := tensorflow-cpu==2.21.0
# The seed article's function as Lambda images (bench/seed/build.sh): Debian's bookworm made
# with debootstrap, these from PyPI, cached by step in TOOL_CACHE/seed. `make test` releases
# them on the data plane; `make bench-seed` measures them beside ours.
SEED_PINS := $(TF_PIN) awslambdaric==4.2.2
SEED_IMAGES := .local/seed-images
# make test builds them where their test can run: as root (debootstrap) with a Docker engine
# (the data plane); elsewhere that test says SKIPPED.
SEED_TESTABLE := $(and $(filter 0,$(shell id -u)),$(shell docker info >/dev/null 2>&1 && echo yes))

# The peers of `make bench-peers`: the seed's Keras and the same model in PyTorch (large:
# PyPI's torch brings CUDA wheels, ~7 GB installed). Never part of `make test` or CI.
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.peers-2
# With the exporters `make fixtures` uses (ONNX from torch and from tf2onnx, safetensors).
PEERS := $(TF_PIN) torch==2.15.0 onnx==1.23.2 onnxscript==0.7.2 tf2onnx==1.17.0 safetensors==0.8.0

.PHONY: test-setup test-arm64 seed-images bench-seed help fixtures build-tools run batch tune deploy deploy-cli install destroy mnist test check build build-arm64 cross-tools tools localstack system-tools browser-tools serve image lint data train eval bench bench-peers load fuzz fuzz-tools clean-local

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: build-tools $(if $(filter arm64,$(ARCH)),build-arm64) ## release-build the library, the CLI, the functions, every test, and the deploy binary (ARCH=arm64: the arm64 functions too)
	$(CARGO) build --release --workspace --all-targets --locked

build-arm64: cross-tools ## cross-build the functions and the library's tests for arm64 (Graviton), into $(CARGO_TARGET_DIR)/aarch64-unknown-linux-gnu
	$(CARGO) build --release --locked --target $(ARM64_TARGET) -p lambda-cnn-predict -p lambda-cnn-train
	$(CARGO) test --release --locked $(ARM64_LIB_TESTS) --no-run

cross-tools: ## install what arm64 builds need: the Rust target, Debian's aarch64 gcc and libc, qemu-user (as root)
	@rustup target list --installed 2>/dev/null | grep -qx $(ARM64_TARGET) || rustup target add $(ARM64_TARGET)
	$(call debian_packages,$(CROSS_TOOLS),$(MISSING_STOPS))

tools: $(TOOLS_STAMP) $(RIE_DIR)/aws-lambda-rie-x86_64 system-tools browser-tools ## install what the tests use: emulators (cargo-lambda, moto, AWS's Runtime Interface Emulator), image tools from Debian

# Independent readers of our images (skopeo, umoci) and the sandbox that runs them the way
# Lambda does (bubblewrap): from Debian's packages, installed when missing and allowed.
SYSTEM_TOOLS := skopeo:skopeo umoci:umoci bwrap:bubblewrap docker-registry:docker-registry debootstrap:debootstrap
# The digit page's test runs Debian's Chromium: installed when root may, else that test says
# SKIPPED with the reason (the rest of `make test` does not need a browser).
BROWSER_TOOLS := chromium:chromium chromedriver:chromium-driver
NO_BROWSER = echo "note: no Chromium and no root to install it: the digit page's browser test will be SKIPPED (apt-get install$$missing)" >&2
browser-tools: ## install Debian's Chromium and chromedriver for the digit page's browser test (as root; else that test is SKIPPED)
	$(call debian_packages,$(BROWSER_TOOLS),$(NO_BROWSER))

build-tools: ## install protoc (Debian's protobuf-compiler), which `lambda-cnn import`'s ONNX reader (candle-onnx) is built with (as root)
	$(if $(PROTOC),,$(call debian_packages,protoc:protobuf-compiler,$(NO_PROTOC)))

system-tools: ## install the image tools the tests use from Debian (skopeo, umoci, bubblewrap, docker-registry, debootstrap; as root)
	$(call debian_packages,$(SYSTEM_TOOLS),$(MISSING_STOPS))

localstack: $(LOCALSTACK_STAMP) ## install LocalStack (community) into .venv-localstack, for AWS_EMULATOR=localstack

# A venv for `$(1)` (the link in the clone) made by `$(2)` with packages `$(3)`, built once in
# TOOL_CACHE under a name that hashes the pins and the Python: what changes either gets a new one.
define cached_venv
	@key=$$(echo '$(3)' "$$($(2) -V 2>&1)" | sha256sum | cut -c1-16); real=$(TOOL_CACHE)/venv-$$key; \
	if [ ! -f $$real/.complete ]; then \
	  echo "installing into $$real: $(3)"; rm -rf $$real; mkdir -p $(TOOL_CACHE); \
	  $(2) -m venv $$real && $$real/bin/pip install --quiet --disable-pip-version-check $(foreach p,$(3),'$(p)') \
	    && touch $$real/.complete || { rm -rf $$real; exit 1; }; \
	fi; \
	rm -rf $(1); ln -s $$real $(1)
endef

$(LOCALSTACK_STAMP):
	@[ -n "$(LOCALSTACK_PYTHON)" ] || { echo "LocalStack needs Python 3.12 or newer: install it (e.g. pyenv install 3.13) or set LOCALSTACK_PYTHON" >&2; exit 1; }
	$(call cached_venv,$(LOCALSTACK_VENV),$(LOCALSTACK_PYTHON),$(LOCALSTACK_PKGS))
	touch $@

$(TOOLS_STAMP):
	$(call cached_venv,$(VENV),$(PYTHON),$(PY_TOOLS))
	touch $@

$(RIE_DIR)/aws-lambda-rie-x86_64: $(TOOLS_STAMP)
	@real=$(TOOL_CACHE)/rie-$$(echo '$(RIE_FROM)' | sha256sum | cut -c1-16); \
	if [ ! -f $$real/.complete ]; then \
	  echo "installing AWS's Lambda Runtime Interface Emulator from $(RIE_FROM) into $$real"; \
	  rm -rf $$real $$real.whl && mkdir -p $$real.whl \
	  && $(VENV)/bin/pip download --quiet --disable-pip-version-check --no-deps '$(RIE_FROM)' -d $$real.whl \
	  && $(VENV)/bin/python -c 'import glob, os, sys, zipfile; \
	      whl = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]); os.makedirs(sys.argv[2]); \
	      names = [n for n in whl.namelist() if n.startswith("samcli/local/rapid/aws-lambda-rie-")]; \
	      assert len(names) == 2, names; \
	      [open(os.path.join(sys.argv[2], os.path.basename(n)), "wb").write(whl.read(n)) for n in names]; \
	      [os.chmod(os.path.join(sys.argv[2], os.path.basename(n)), 0o755) for n in names]' $$real.whl $$real \
	  && rm -rf $$real.whl && touch $$real/.complete || { rm -rf $$real $$real.whl; exit 1; }; \
	fi; \
	rm -rf $(RIE_DIR); ln -s $$real $(RIE_DIR)

# The test runner: cargo-nextest where it is installed (this project's machines have it), each
# test in a process of its own and several at once, as .config/nextest.toml says; else cargo
# test, one test binary at a time. The same tests either way.
# (Recursive `=`: asked only by the targets that run tests, not by every make.)
TEST_RUN = $(if $(shell $(CARGO) nextest --version 2>/dev/null),$(CARGO) nextest run --cargo-quiet,$(CARGO) test)

# What make check and make test both hold the code to.
FMT_CHECK := $(CARGO) fmt --all -- --check
CLIPPY_CHECK := $(CARGO) clippy --release --workspace --all-targets --locked -- -D warnings

# Every test that skips for want of something appends its reason here (lambda_cnn::simd::skip);
# make test ends with the count, so a green run cannot hide one.
SKIP_LOG := $(CURDIR)/.local/skipped.log
test: export LAMBDA_CNN_SKIP_LOG := $(SKIP_LOG)
test: export LAMBDA_CNN_SEED_IMAGES := $(abspath $(SEED_IMAGES))
test: test-setup ## format and lint checks, then every unit and integration test (and the library's on arm64, under qemu)
	@mkdir -p "$(dir $(SKIP_LOG))" && rm -f "$(SKIP_LOG)"
	$(FMT_CHECK)
	$(CLIPPY_CHECK)
	@# The boundaries (docs/architecture.md): the core links neither candle nor an AWS SDK, the
	@# deploy tooling never candle, the functions and the CLI nothing of the deploy tooling's,
	@# the local stack neither candle nor the deploy crate (it runs the deploy binary).
	@# (pipefail: a cargo tree that fails must not read as "nothing found".)
	@set -o pipefail; ! $(CARGO) tree -e normal -p lambda-cnn-core --locked | grep -E 'candle|aws-sdk' \
	  || { echo "the core (crates/core) depends on candle or an AWS SDK" >&2; exit 1; }
	@set -o pipefail; ! $(CARGO) tree -e normal -p lambda-cnn-deploy --locked | grep -E 'candle' \
	  || { echo "the deploy tooling (crates/deploy) depends on candle" >&2; exit 1; }
	@set -o pipefail; ! $(CARGO) tree -e normal -p lambda-cnn-local --locked | grep -E 'candle|lambda-cnn-deploy' \
	  || { echo "the local stack (crates/local) depends on candle or the deploy crate" >&2; exit 1; }
	@set -o pipefail; ! $(CARGO) tree -e normal -p lambda-cnn -p lambda-cnn-predict -p lambda-cnn-train --locked \
	  | grep -E 'lambda-cnn-deploy|oci-client|aws-sdk-(lambda|ecr|iam|sfn|apigateway|cloudwatchlogs)' \
	  || { echo "the functions or the CLI depend on the deploy tooling" >&2; exit 1; }
	@# Without `ml`, the ML crate is the core and the optimizers: that still builds.
	$(CARGO) clippy --release -p lambda-cnn --no-default-features --lib --locked -- -D warnings
	@# The arm64 code (the NEON kernels) and its unit tests: the test profile checks with cfg(test).
	$(CARGO) clippy --profile test --locked $(ARM64_LIB_TESTS) -- -D warnings
	$(TEST_RUN) --release --workspace --locked --no-fail-fast
	@$(MAKE) --no-print-directory test-arm64
	@# The suites that talk to an AWS emulator, once more against LocalStack (moto serving what it lacks).
	@echo "AWS_EMULATOR=localstack: LocalStack serves S3, STS, IAM, API Gateway v1; moto serves ECR, image Lambdas, API Gateway v2, Logs (LOCALSTACK_LACKS in crates/test-kit/src/aws_emulator.rs)"
	AWS_EMULATOR=localstack $(TEST_RUN) --release --locked --no-fail-fast --test functions_s3_store --test functions_batch --test deploy_pipeline --test deploy_tune --test deploy_batch
	@if [ -s "$(SKIP_LOG)" ]; then echo "skipped: $$(wc -l < "$(SKIP_LOG)") time(s) for want of something (LAMBDA_CNN_REQUIRE=$(LAMBDA_CNN_REQUIRE)):"; sort "$(SKIP_LOG)" | uniq -c; \
	  else echo "skipped: none"; fi

# What make test needs, made four at a time: the builds take the CPU while the installs (venvs,
# Debian's packages, the seed's images) mostly wait on the network and the disk. Their lines
# interleave as they come (an output-sync mode would hold a 10-minute build's until it ends).
TEST_SETUP := build build-arm64 tools localstack $(if $(SEED_TESTABLE),seed-images)
test-setup:
	@$(MAKE) --no-print-directory -j4 $(TEST_SETUP)

test-arm64: build-arm64 ## the library's tests as arm64 code under qemu-aarch64: the NEON kernels against the loops, the model, the optimizers (make test runs them)
	@# Speed under emulation means nothing; correctness does.
	LAMBDA_CNN_REQUIRE=neon $(CARGO) test --release --locked $(ARM64_LIB_TESTS) --no-fail-fast

check: build-tools ## the inner loop, under a minute warm: cargo fmt --check, clippy -D warnings, the library's unit tests (make test runs everything)
	$(FMT_CHECK)
	$(CLIPPY_CHECK)
	$(CARGO) test --release --locked --lib

lint: ## cargo fmt, then clippy applying the fixes it can (--fix), then clippy -D warnings as make test runs it
	$(CARGO) fmt --all
	$(CARGO) clippy --release --workspace --all-targets --fix --allow-dirty --allow-staged
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

run: build tools $(if $(filter localstack,$(AWS_EMULATOR)),localstack) ## the main job on local stand-ins (no AWS account): build, image, push, release, api, predict, train (ARCH=arm64: arm64 images, run under qemu; MODEL=FILE: then release that imported model)
	$(LOCAL_RUN) \
	  $(if $(MODEL),--model "$(MODEL)")

tune: build tools ## make run, then `deploy tune` of both functions on the local data plane (memory buys CPU there as on Lambda; needs Docker); charts into docs/
	$(LOCAL_RUN) --tune docs

batch: build tools ## make run, then `deploy batch` over 200 real test digits and 3 broken objects in the local S3: Step Functions' Distributed Map on moto, each child predict:live on the data plane (needs Docker); prints the summary
	$(LOCAL_RUN) --batch 200 --batch-broken

serve: build tools ## the digit page on this machine (predict under the Runtime API emulator) at a printed http://127.0.0.1:PORT/ address, until Ctrl-C
	$(LOCAL) serve --predict $(CARGO_TARGET_DIR)/release/predict --cargo-lambda $(VENV)/bin/cargo-lambda --weights $(WEIGHTS)

deploy-cli: ## build the deploy binary alone (crates/deploy: no candle): what deploy and destroy need
	$(CARGO) build --release --locked -p lambda-cnn-deploy --bin deploy

install: ## put `deploy` on PATH (cargo install into ~/.cargo/bin)
	$(CARGO) install --locked --path crates/deploy --bin deploy

deploy: deploy-cli mnist ## deploy all into the AWS account of the standard config chain (AWS_PROFILE, AWS_REGION, ...); ARCH=arm64 for Graviton (default: infra/deploy.toml's)
	$(DEPLOY) all $(if $(filter command line environment,$(origin ARCH)),--arch $(ARCH))

destroy: deploy-cli ## remove what make deploy made in the account of the standard config chain (asks first; ALL=1 deletes the ECR repository and the bucket too)
	$(DEPLOY) destroy $(if $(ALL),--all)

# The train image carries MNIST: `make deploy` fetches it first when MNIST_DIR lacks it.
mnist: ## make sure MNIST_DIR holds MNIST (make data downloads it when MNIST_DIR is the default data/mnist): make deploy packs it into the train image
	@# make data's download counts once its checksums passed (its stamp); a copy elsewhere is
	@# the user's to vouch for.
	@if [ "$(MNIST_DIR)" = "$(abspath data/mnist)" ]; then \
	  [ -f data/mnist/.verified ] || $(MAKE) --no-print-directory data; \
	else \
	  [ -s "$(MNIST_DIR)/t10k-labels-idx1-ubyte.gz" ] && [ -s "$(MNIST_DIR)/train-images-idx3-ubyte.gz" ] \
	    || { echo "MNIST is not in MNIST_DIR=$(MNIST_DIR): run \`make data\` (downloads into data/mnist) or point MNIST_DIR at a copy" >&2; exit 1; }; \
	fi

data: build-tools ## download MNIST from the public mirrors into data/mnist and verify the checksums
	@mkdir -p data/mnist
	@for f in $(MNIST_FILES); do \
	  [ -s data/mnist/$$f.gz ] && continue; \
	  for m in $(MNIST_MIRRORS); do \
	    echo "fetching $$m/$$f.gz"; \
	    curl -fsSL --retry 3 -o data/mnist/$$f.gz.part "$$m/$$f.gz" && mv data/mnist/$$f.gz.part data/mnist/$$f.gz && break; \
	  done; \
	  [ -s data/mnist/$$f.gz ] || { echo "could not download $$f.gz from any mirror ($(MNIST_MIRRORS))" >&2; exit 1; }; \
	done
	@# The CLI, resolved over the workspace as deploy build and make build resolve it (the same
	@# units: no rebuild either way).
	$(CARGO) build --release --locked --workspace --bin lambda-cnn
	@# A file that fails its check is not kept, so that running `make data` again fetches it anew.
	$(CLI) check-data --mnist-dir data/mnist \
	  || { rm -rf data/mnist; echo "removed data/mnist: run \`make data\` again to download it anew" >&2; exit 1; }
	@touch data/mnist/.verified

train: build ## retrain the shipped weights (5 epochs, Adam 1e-3, batch 32) and their card
	$(CLI) train --epochs 5 --batch-size 32 --optimizer adam --lr 0.001 --seed 42 \
	  --mnist-dir "$(MNIST_DIR)" --out $(WEIGHTS)

eval: build ## test accuracy of the shipped weights
	$(CLI) eval --weights $(WEIGHTS) --mnist-dir "$(MNIST_DIR)" --json

bench: build tools ## measure ours (training, inference, cold start, memory; the predict function under load; the seed imported from Keras beside it); compare with the peers when installed
	$(CLI) bench --mnist-dir "$(MNIST_DIR)"
	@# An imported model of the seed's architecture runs on the same kernels: the shipped weights
	@# imported as a state dict time as the native file does (docs/import.md, Speed).
	@mkdir -p .local/bench
	$(CLI) import $(WEIGHTS) --layers bench/seed.layers.json --out .local/bench/seed-reimported.safetensors >/dev/null
	$(CLI) bench --model $(WEIGHTS) --mnist-dir "$(MNIST_DIR)"
	$(CLI) bench --model .local/bench/seed-reimported.safetensors --mnist-dir "$(MNIST_DIR)"
	@# Image assembly from the built binary (the layer cache makes unchanged layers free).
	$(DEPLOY) image --function predict --binary $(CARGO_TARGET_DIR)/release/predict --weights $(WEIGHTS) --out .local/images/predict
	$(PYTHON) bench/predict_load.py --predict $(CARGO_TARGET_DIR)/release/predict --cargo-lambda $(VENV)/bin/cargo-lambda \
	  --weights $(WEIGHTS) --mnist-dir "$(MNIST_DIR)"
	@if [ -f $(PEERS_STAMP) ]; then $(MAKE) --no-print-directory bench-peers; \
	 else echo "(peers not installed: \`make bench-peers\` installs tensorflow-cpu and torch into $(PEERS_VENV), ~7 GB, and compares)"; fi

seed-images: system-tools mnist ## build the seed article's Python/TensorFlow function as Lambda images (train, predict) into .local/seed-images, from Debian's and PyPI's packages (as root; ~1.5 GB, cached)
	MNIST_DIR="$(MNIST_DIR)" SEED_PINS="$(SEED_PINS)" SEED_CACHE="$(TOOL_CACHE)/seed" PYTHON="$(PYTHON)" bash bench/seed/build.sh $(SEED_IMAGES)

bench-seed: build tools seed-images ## lambda-cnn and the seed's Python/TensorFlow function on the same local Lambda (needs Docker): init, warm, peak memory, cost per memory size; table and charts into docs/seed.md
	$(LOCAL_RUN) \
	  --seed-images $(SEED_IMAGES) --bench-seed docs

bench-peers: build $(PEERS_STAMP) ## ours vs the seed's Keras and PyTorch, alternating 3 times, median ratios; imported models (two conv layers) vs PyTorch
	$(PYTHON) bench/compare.py --ours $(CLI) --python $(PEERS_VENV)/bin/python --mnist-dir "$(MNIST_DIR)"

$(PEERS_STAMP):
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --disable-pip-version-check $(PEERS)
	touch $@

fixtures: $(PEERS_STAMP) ## remake the imported-model fixtures (tests/fixtures/models) with Keras, PyTorch and their ONNX exporters; not part of make test
	$(PEERS_VENV)/bin/python tests/fixtures/models/make.py --mnist-dir "$(MNIST_DIR)"

load: build tools ## 10,000 good and hostile requests from 32 clients to one predict process: 0 5xx, latency, peak RSS
	$(PYTHON) bench/hostile_load.py --predict $(CARGO_TARGET_DIR)/release/predict --cargo-lambda $(VENV)/bin/cargo-lambda \
	  --weights $(WEIGHTS) --mnist-dir "$(MNIST_DIR)"

# cargo-fuzz (libFuzzer) on the nightly toolchain; its builds live beside the others.
FUZZ_TARGETS := predict_event image_decode train_request safetensors_load model_import
FUZZ_SECONDS ?= 600
FUZZ_JOBS ?= 1
CARGO_FUZZ_VERSION := 0.13.1

fuzz-tools: ## install cargo-fuzz and the nightly toolchain it needs
	@command -v cargo-fuzz >/dev/null && cargo fuzz --version | grep -q $(CARGO_FUZZ_VERSION) \
	  || cargo install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal

fuzz: fuzz-tools ## run each fuzz target FUZZ_SECONDS (600) seconds, growing fuzz/corpus; crashes land in fuzz/artifacts
	@for t in $(FUZZ_TARGETS); do \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  cargo +nightly fuzz run --fuzz-dir fuzz --target-dir $(CARGO_TARGET_DIR)/fuzz $$t fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 -max_len=65536 -jobs=$(FUZZ_JOBS) -workers=$(FUZZ_JOBS) -print_final_stats=1 || exit 1; \
	done
	@# Keep the corpora small enough to commit and to replay in `make test`.
	@for t in $(FUZZ_TARGETS); do \
	  cargo +nightly fuzz cmin --fuzz-dir fuzz --target-dir $(CARGO_TARGET_DIR)/fuzz $$t fuzz/corpus/$$t >/dev/null 2>&1 || true; \
	done

image: build ## build both functions' OCI images (.local/images/*, with docker tars) and print digests and sizes (ARCH=arm64: the arm64 ones)
	$(DEPLOY) image --function predict --binary $(FUNCTIONS_DIR)/predict --weights $(WEIGHTS) \
	  --out .local/images/predict --tar .local/images/predict.tar
	$(DEPLOY) image --function train --binary $(FUNCTIONS_DIR)/train --mnist-dir "$(MNIST_DIR)" \
	  --out .local/images/train --tar .local/images/train.tar

clean-local: ## forget the local state of `make run`
	rm -rf .local
