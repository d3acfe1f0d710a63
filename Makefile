# Two commands do everything on a fresh Debian/Ubuntu machine:
#   make run    live captions from the default microphone (set-up included)
#   make test   the whole test suite (set-up included; starts a PulseAudio null sink)
# Both are idempotent: each step is skipped when already done.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
AE      := $(VENV)/bin/audio-engine
GRAPH   ?= graphs/live_captions.toml
STAMP   := $(VENV)/.installed

.PHONY: run test setup system venv models models-all lint bench clean

run: setup models
	$(AE) run $(GRAPH) $(ARGS)

test: setup models-all
	. tools/pulse_null.sh && $(PY) -m pytest -q $(PYTEST_ARGS)

setup: system venv

system:
	@bash tools/install_system.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[pyaudio,test,hrtf,aec]'
	@touch $(STAMP)

models: venv
	$(AE) models fetch

models-all: venv          # the tests also cover the optional multilingual whisper-base
	$(AE) models fetch --all

lint: venv
	$(VENV)/bin/ruff check engine tests tools

bench: setup models
	$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	. tools/pulse_null.sh && for b in tools/bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
