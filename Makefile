# make run: build .venv if needed, install, reproduce the pipeline. make test: the same, then pytest.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
# The CUDA build of torch is ~3 GB of wheels; a pip cache would hold a second copy of them on disk (CI ran
# out of space installing once), and nothing here reinstalls often enough to gain from one.
export PIP_NO_CACHE_DIR := 1

.PHONY: install system run test bench browser clean-venv

# A new .venv takes ~7.1 GB (torch's CUDA build and its nvidia libraries): checked before pip starts, so that
# a full disk is named here rather than as pip's OSError halfway through torch (how CI once failed).
VENV_NEEDS_MB := 7500

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python || df -Pm $(dir $(abspath $(VENV))) | awk -v need=$(VENV_NEEDS_MB) 'NR == 2 && $$4 < need \
	  { printf "error: a new $(VENV) needs about %d MB free; %d MB free on %s\n", need, $$4, $$6 > "/dev/stderr"; exit 1 }'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: system $(STAMP)

# System libraries the Python packages rely on: opencv-python (face-alignment needs the non-headless build)
# loads libGL.so.1 and libgthread; installed here when missing and we may (root with apt-get), else named.
system:
	@ldconfig -p | grep -q 'libGL.so.1 ' && ldconfig -p | grep -q 'libgthread-2.0.so.0 ' || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgl1 libglib2.0-0 >/dev/null; \
	    else echo "note: opencv-python needs libGL and GLib: install libgl1 and libglib2.0-0"; fi; }

run: install
	$(BIN)/dvc repro

# The report test opens reports/index.html in Debian's headless Chromium: installed here when missing and
# we may (root with apt-get), else the test says what to install and is skipped (failed in CI).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	    else echo "note: install chromium and chromium-driver for the browser test of the report"; fi; }

test: install browser
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/align_throughput.py

clean-venv:
	rm -rf $(VENV)
