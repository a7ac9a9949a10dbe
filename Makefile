# Two commands for a fresh machine (see README):
#   make reproduce   -- install everything, then run the default mini reproduction (CPU)
#   make test        -- install everything, then run the test suite
#   make estimate    -- jobs, CPU hours and wall time of `make reproduce` before running it
#   make publish-reference SCALE=mini -- results/mini -> results/reference/mini (then commit)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.pgd-installed
CORES  ?= all
SCALE  ?= mini

.PHONY: setup test reproduce smoke estimate publish-reference clean-venv

setup: $(STAMP)

# mmcv's compiled ops are built against the installed torch, so the order matters: torch,
# then the build tools mmcv's setup.py needs (setuptools<70), then mmcv without build
# isolation, then the pinned rest. pip caches the built mmcv wheel, so a rebuild is rare.
$(STAMP): envs/requirements-cpu.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel
	$(PIP) install torch==2.13.0
	$(PIP) install "setuptools<70"
	$(PY) -c "import mmcv.ops" 2>/dev/null || \
		MMCV_WITH_OPS=1 MAX_JOBS=$$(nproc) $(PIP) install --no-build-isolation mmcv==2.1.0
	$(PIP) install -r envs/requirements-cpu.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	$(PY) -c "import mmcv.ops, mmdet, mmengine, pgd; print('pgd environment ready')"
	touch $(STAMP)

test: setup
	$(PY) -m pytest tests

reproduce: setup
	$(VENV)/bin/snakemake --cores $(CORES)

smoke: setup
	$(VENV)/bin/snakemake --cores $(CORES) --config scale=smoke

estimate: setup
	$(PY) -m pgd estimate --scale $(SCALE) --cores $$( [ "$(CORES)" = all ] && nproc || echo $(CORES) )

publish-reference: setup
	$(PY) -m pgd publish-reference --scale $(SCALE)

clean-venv:
	rm -rf $(VENV)
