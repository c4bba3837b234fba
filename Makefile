# Quick start: `make demo` (set up, then train a uniform and a learned mixed-precision LeNet
# on the embedded digits set, freeze, simulate, export each to FPGA, host CPU and ARM and run
# them, bit-exact) and `make test`. Both first install the system tools the backends use
# when missing (scripts/system-tools.sh: apt-get, with sudo when not root), then the venv.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# One pytest worker per core (pytest-xdist); tests sharing a longer-lived fixture stay on one
# worker so it is built once, the rest spread (tests/tiers.py). PYTEST_XDIST= runs serially.
PYTEST_XDIST ?= -n auto --dist loadgroup
# The 25 slowest tests are listed after every run: where the suite's time goes, in CI too.
PYTEST_DURATIONS ?= --durations=25

.PHONY: tools install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,rtl]'
	touch $(STAMP)

install: $(STAMP)

# g++, make, perl, gcc-aarch64-linux-gnu, qemu-user, ccache (and python3-venv) when missing;
# never fails: what cannot be installed is named in one line and the steps needing it are
# skipped.
tools:
	@PYTHON=$(PYTHON) scripts/system-tools.sh

# Prerequisites run left to right: the tools (python3-venv among them) before the venv.
demo: tools install
	@VENV=$(VENV) scripts/demo.sh

# pytest exits 5 when it collects nothing: that is a failure here, and says so.
test: tools install
	@$(PY) -m pytest $(PYTEST_XDIST) $(PYTEST_DURATIONS) --doctest-modules qcompile tests \
		$(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The unit tier: everything not marked slow (each slow sweep keeps one fast representative).
test-fast: PYTEST_ARGS += -m "not slow"
test-fast: test

lint: install
	$(VENV)/bin/ruff check qcompile tests bench
	$(VENV)/bin/ruff format --check qcompile tests bench

bench: install
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,rtl,bench]'
	$(PY) -m bench.train_accuracy
	$(PY) -m bench.train_overhead
	$(PY) -m bench.train_profile
	$(PY) -m bench.train_profile --model resnet20
	$(PY) -m bench.accuracy_dqa
	$(PY) -m bench.freeze_accuracy
	$(PY) -m bench.sim
	$(PY) -m bench.fpga_memory
	$(PY) -m bench.dqa_ablation
	$(PY) -m bench.accuracy_mp --data mnist5k
	$(PY) -m bench.accuracy_mp --data digits
	$(PY) -m bench.mp_ablation
	$(PY) -m bench.kernels
	$(PY) -m bench.latency
	$(PY) -m bench.qonnx_exact
	$(PY) -m bench.fpga_rtl

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
