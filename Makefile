# One command each: `make demo` (venv + install + compile deit-small + profile), `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install demo test test-all bench bench-tvm bench-rewrites bench-int8 bench-archs bench-zen4 gpu-bundle clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[compiler,openvino,tvm,test]'
	# mobile target, TVM aarch64 variant: the aarch64 runtime libraries come from the aarch64
	# wheels (downloaded, not installed); the cross g++ and qemu from apt where we are root.
	$(PIP) download apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 --no-deps --only-binary=:all: \
		--platform manylinux_2_28_aarch64 --python-version 3.11 -d $(VENV)/share/edgeattn/aarch64-wheels
	sh scripts/install-mobile-tools.sh
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

# Issue 5's TVM row: the untuned TVM build (default schedules) against ORT, OpenVINO and the peers.
bench-tvm: install
	$(VENV)/bin/edgeattn bench deit-small --targets ort,openvino,tvm --baselines -o bench/deit-small-tvm
	$(VENV)/bin/edgeattn bench minilm-l6@512 --targets ort,openvino,tvm --baselines -o bench/minilm-l6_512-tvm

# Issue 6's table: int8 under each model's budget against OpenVINO + NNCF.
bench-int8: install
	$(VENV)/bin/edgeattn bench digits-vit --targets ort,openvino --precision fp32,int8 --baselines --budget "top1-drop<=0.5" --calib-method auto -o bench/digits-vit-int8
	$(VENV)/bin/edgeattn bench deit-small --targets ort,openvino --precision fp32,int8 --baselines --budget "cosine>=0.999" --calib-method auto -o bench/deit-small-int8
	$(VENV)/bin/edgeattn bench minilm-l6@128 --targets ort,openvino --precision fp32,int8 --baselines --budget "embedding-cosine>=0.99,nn-agree>=0.97" --calib-method auto -o bench/minilm-l6_128-int8
	$(VENV)/bin/edgeattn bench minilm-l6@512 --targets ort,openvino --precision fp32,int8 --baselines --budget "embedding-cosine>=0.99,nn-agree>=0.98" --calib-method auto -o bench/minilm-l6_512-int8

# Issue 4's table: each model exact vs the plan `--rewrite auto` finds inside its budget.
bench-rewrites: install
	$(VENV)/bin/edgeattn bench digits-vit --targets ort,openvino --rewrite auto --budget "top1-drop<=0.5" --rounds 20 --runs 100 -o bench/digits-vit-auto
	$(VENV)/bin/edgeattn bench digits-vit-hr --targets ort,openvino --rewrite auto --budget "top1-drop<=1" -o bench/digits-vit-hr-auto
	$(VENV)/bin/edgeattn bench deit-small@384 --targets ort,openvino --rewrite auto --budget "cosine>=0.99" -o bench/deit-small_384-auto
	$(VENV)/bin/edgeattn bench deit-small@512 --targets ort,openvino --rewrite auto --budget "cosine>=0.99" -o bench/deit-small_512-auto
	$(VENV)/bin/edgeattn bench minilm-l6@512 --targets ort,openvino --rewrite auto:max_evals=30 --budget "embedding-cosine>=0.99,nn-agree>=0.98" -o bench/minilm-l6_512-auto

# 16 Hugging Face architectures (config-only folders, random weights) through ORT and OpenVINO (fp32 and int8) and TVM (fp32).
bench-archs: install
	$(PY) tests/benchmarks/arch_sweep.py --targets ort,openvino,tvm,mobile --precisions fp32,int8 --json bench/arch-sweep.json

# What is still owed to a Zen 4 machine (AVX-512 with BF16 and VNNI), in one run (~1 h): issue 5's
# bf16 goals (bench, then our OpenVINO bf16 against OpenVINO's own in 120 interleaved rounds),
# issue 6's int8 against OpenVINO + NNCF (bench, then 120 rounds), and the TVM attention kernel at
# the AVX-512 tile geometry (never timed). Output: bench/zen4/ (reports) and bench/zen4/*.txt (A/B).
Z4 := bench/zen4
AB := $(PY) tests/benchmarks/ab_artifacts.py --rounds 120
bench-zen4: install
	@grep -q avx512_bf16 /proc/cpuinfo && grep -q avx512_vnni /proc/cpuinfo || { echo "bench-zen4: this CPU has no AVX512-BF16/VNNI"; exit 1; }
	mkdir -p $(Z4)
	for m in deit-small minilm-l6@512; do d=$(Z4)/$$(echo $$m | tr @ _)-bf16; \
	  $(VENV)/bin/edgeattn bench $$m --targets ort,openvino --precision fp32,bf16 --baselines -o $$d && \
	  $(AB) $$d/artifacts/openvino-bf16 $$d/artifacts/openvino-plain-bf16 | tee $$d.txt || exit 1; done
	for mb in "deit-small|cosine>=0.999" "minilm-l6@128|embedding-cosine>=0.99,nn-agree>=0.97" \
	          "minilm-l6@512|embedding-cosine>=0.99,nn-agree>=0.97"; do m=$${mb%%|*}; d=$(Z4)/$$(echo $$m | tr @ _)-int8; \
	  $(VENV)/bin/edgeattn bench $$m --targets ort,openvino --precision fp32,int8 --baselines --budget "$${mb#*|}" \
	    --calib-method auto -o $$d && \
	  $(AB) $$d/artifacts/ort-int8 $$d/artifacts/openvino-int8 $$d/artifacts/openvino-nncf | tee $$d.txt || exit 1; done
	$(PY) tests/benchmarks/tvm_attention_kernel.py --rounds 40 | tee $(Z4)/tvm-attention-kernel.txt

# Issue 3's GPU check, prepared here (no GPU needed): the tvm-cuda artifact and the tvm-ffi wheel for
# the GPU machine's Python 3.12; there: sh scripts/gpu-check.sh .gpu/deit-fp16 --out results.json
gpu-bundle: install
	$(VENV)/bin/edgeattn compile deit-small --target tvm-cuda --precision fp16 --batches 1,32 -o .gpu/deit-fp16 --force
	$(PIP) download apache-tvm-ffi==0.1.14.post1 --no-deps --only-binary=:all: \
		--platform manylinux_2_28_x86_64 --python-version 3.12 -d .whl

clean:
	rm -rf $(VENV) artifacts
