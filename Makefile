# Quick start: `make demo` (install, train on the embedded digits set, freeze, simulate,
# export to FPGA, host CPU and ARM and run each, bit-exact) and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	rm -rf runs/demo
	$(VENV)/bin/qcompile train models/lenet_digits_w4a4.toml --out runs/demo
	$(VENV)/bin/qcompile freeze runs/demo/checkpoint.pt -o runs/demo/lenet.qir
	$(VENV)/bin/qcompile simulate runs/demo/lenet.qir
	$(VENV)/bin/qcompile export runs/demo/lenet.qir --target fpga -o runs/demo/fpga
	$(VENV)/bin/qcompile simulate runs/demo/fpga
	$(VENV)/bin/qcompile export runs/demo/lenet.qir --target cpu -o runs/demo/cpu
	$(VENV)/bin/qcompile simulate runs/demo/cpu
	$(VENV)/bin/qcompile export runs/demo/lenet.qir --target arm -o runs/demo/arm
	$(VENV)/bin/qcompile simulate runs/demo/arm

# pytest exits 5 when it collects nothing: that is a failure here, and says so.
test: install
	@$(PY) -m pytest --doctest-modules qcompile tests $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: PYTEST_ARGS += -m "not slow"
test-fast: test

lint: install
	$(VENV)/bin/ruff check qcompile tests bench
	$(VENV)/bin/ruff format --check qcompile tests bench

bench: install
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
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

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
