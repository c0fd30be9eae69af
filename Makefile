# One command each: `make demo` (venv + install + compile deit-small + profile), `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install demo test test-all bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[compiler,openvino,tvm,test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/edgeattn compile deit-small --target ort -o artifacts/deit-small-ort --force
	$(VENV)/bin/edgeattn profile artifacts/deit-small-ort --runs 30

test: install
	$(VENV)/bin/pytest -q

test-all: install
	$(VENV)/bin/pytest -q -m ''

bench: install
	$(PY) tests/benchmarks/bench_foundation.py
	$(VENV)/bin/edgeattn bench deit-small --targets ort,openvino --precision fp32,bf16 --baselines -o bench/deit-small
	$(VENV)/bin/edgeattn bench minilm-l6@512 --targets ort,openvino --precision fp32,bf16 --baselines -o bench/minilm-l6_512

clean:
	rm -rf $(VENV) artifacts
