# dmfnet-edge: `make demo` and `make test` set everything up on a fresh machine (Python 3.10+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= train,onnx,quantize,medical,trt-rtx,trt-plugins,serve,dev
DEMO_OUT ?= out/demo

.PHONY: demo test test-fast test-runtime coverage bench clean serve-env

PIP := $(BIN)/pip install --disable-pip-version-check

# Everything (tests, training, exports, TensorRT for RTX builds): about 2 GB in the venv.
$(VENV)/.installed: pyproject.toml
	@echo "== creating $(VENV) and installing dmfnet-edge[$(EXTRAS)] (torch CPU build, Model Optimizer, TensorRT for RTX, ...)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[$(EXTRAS)]'
	touch $@ $(VENV)/.runtime

# The runtime only (numpy, OpenCV, ONNX Runtime; no torch): about 0.5 GB, what `make demo` needs.
$(VENV)/.runtime: pyproject.toml
	@echo "== creating $(VENV) and installing the runtime: dmfnet-edge[onnx] (no torch)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[onnx]'
	touch $@

install: $(VENV)/.installed

# `dmfnet serve` (PyTriton pins numpy<2): an environment of its own beside the main one.
SERVE_VENV ?= .venv-serve
$(SERVE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --disable-pip-version-check -e '.[onnx,serve-server]'
	touch $@

serve-env: $(SERVE_VENV)/.installed

# Fuse the bundled sample pairs (one per modality) with the shipped edge model on the embedded default backend.
demo: $(VENV)/.runtime
	@echo "== fusing the three bundled sample pairs on the embedded default (ONNX Runtime, FP32)"
	$(BIN)/dmfnet fuse-dir --pairs dmfnet_edge/samples --out $(DEMO_OUT) --metrics
	@echo "== done: open $(DEMO_OUT)/report.md (or overview.png); run the tools as $(BIN)/dmfnet, or after 'source $(BIN)/activate'"

# The whole suite, then the runtime-only tier (the console's install: torch unimportable).
test: $(VENV)/.installed $(SERVE_VENV)/.installed
	$(BIN)/lint-imports
	$(BIN)/ruff check --no-force-exclude .
	$(BIN)/python -m pytest -q
	DMFNET_TIER=runtime $(BIN)/python -m pytest -q -m runtime

# The edit loop: every test but the slow ones (minutes).
test-fast: $(VENV)/.installed $(SERVE_VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

# What a runtime-only console runs (ONNX Runtime, readers, records, reports), with torch unimportable.
test-runtime: $(VENV)/.installed
	DMFNET_TIER=runtime $(BIN)/python -m pytest -q -m runtime

coverage: $(VENV)/.installed $(SERVE_VENV)/.installed
	rm -f .coverage .coverage.*
	$(BIN)/python -m coverage run -m pytest -q -m "not slow"
	$(BIN)/python -m coverage combine -q
	$(BIN)/python -m coverage report --skip-covered --sort=cover

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_cpu.py
	$(BIN)/python benchmarks/bench_onnx_cpu.py

clean:
	rm -rf $(VENV) $(SERVE_VENV) out build *.egg-info

# ---- maintainers: turning a training run into the shipped model, and the deployment artefacts ----------------
RUN ?= runs/edge-stage2
DATA ?= ../shared/data/harvard
INT8_METHOD ?= entropy
WEIGHTS := dmfnet_edge/weights
EXPORT_OUT ?= out/export

.PHONY: weights export verify engines bench-all

# Ship the stage-2 weights of $(RUN) (its validation-selected RUN/best where it has one, else its final
# RUN/dmfnet) with their ONNX graphs: the dynamic fp32 one and the ONNX Runtime int8 one (recipe export/cpu-int8).
PICK = $(if $(wildcard $(RUN)/best.safetensors),best,dmfnet)
weights: $(VENV)/.installed
	cp $(RUN)/$(PICK).safetensors $(WEIGHTS)/dmfnet-edge.safetensors
	cp $(RUN)/$(PICK).json $(WEIGHTS)/dmfnet-edge.json
	$(BIN)/dmfnet-export onnx --model edge -o $(WEIGHTS) --dynamic --name dmfnet-edge-fp32
	$(BIN)/dmfnet-export quantize --onnx $(WEIGHTS)/dmfnet-edge-fp32.onnx --recipe export/cpu-int8.yaml \
	    --plot docs/figures/int8_sensitivity.png -o $(WEIGHTS)/dmfnet-edge-int8-onnxruntime.onnx

# Every deployment target of export/*.yaml from the shipped FP32 graph (graph, and the engine where its toolchain
# builds here), plus the static fp32 and plugin graphs for fixed-shape consumers. Gates: `make verify`.
export: $(VENV)/.installed
	$(BIN)/dmfnet-export onnx --model edge -o $(EXPORT_OUT)
	$(BIN)/dmfnet-export onnx --model edge -o $(EXPORT_OUT) --trt-plugins
	$(BIN)/dmfnet-export recipe export --out $(EXPORT_OUT) --no-gate

# Accuracy gates of every distinct graph against the PyTorch reference on the whole validation split (the
# datacenter recipe's FP16 graph is the workstation one's).
verify: $(VENV)/.installed
	$(BIN)/dmfnet-export verify --model edge --pairs $(DATA)/val --report out/verify \
	    --onnx $(WEIGHTS)/dmfnet-edge-fp32.onnx $(WEIGHTS)/dmfnet-edge-int8-onnxruntime.onnx \
	    $(EXPORT_OUT)/workstation-rtx-fp16/dmfnet-edge-fp16.onnx $(EXPORT_OUT)/jetson-orin-int8/dmfnet-edge-int8-tensorrt.onnx

# TensorRT for RTX engines of the exported recipes (no GPU needed): build times, sizes, layer precisions, manifests.
engines: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_engine_build.py --repeats 3 --manifests docs/engines

bench-all: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_cpu.py
	$(BIN)/python benchmarks/bench_onnx_cpu.py --int8-trt $(EXPORT_OUT)/jetson-orin-int8/dmfnet-edge-int8-tensorrt.onnx --profile
	$(BIN)/python benchmarks/bench_volume.py

# The GPU check (benchmarks/gpu_check.py, docs/DEPLOYMENT.md): on a lent GPU machine one command of at most 8 minutes
# writes gpu_check.json and gpu_check.md under GPU_CHECK_OUT ($OUT there). Anywhere else, a dry run (imports, plan, the
# size of what travels): make gpu-check GPU_CHECK_ARGS=--dry-run. No venv there: its python3 holds torch.
GPU_CHECK_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_CHECK_OUT ?= $(if $(OUT),$(OUT),out/gpu-check)
.PHONY: gpu-check
gpu-check:
	$(GPU_CHECK_PYTHON) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)
