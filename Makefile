# dmfnet-edge: `make demo` and `make test` set everything up on a fresh machine (Python 3.10+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= train,onnx,quantize,medical,dev
DEMO_OUT ?= out/demo

.PHONY: demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

# Fuse the bundled sample pairs (one per modality) with the shipped edge model on the embedded default backend.
demo: $(VENV)/.installed
	$(BIN)/dmfnet fuse-dir --pairs dmfnet_edge/samples --out $(DEMO_OUT) --metrics
	@echo "fused images, report.md and overview.png are in $(DEMO_OUT)/"

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_cpu.py
	$(BIN)/python benchmarks/bench_onnx_cpu.py

clean:
	rm -rf $(VENV) out build *.egg-info

# ---- maintainers: turning a training run into the shipped model, and the deployment artefacts ----------------
RUN ?= runs/edge-stage2
DATA ?= ../shared/data/harvard
INT8_METHOD ?= entropy
WEIGHTS := dmfnet_edge/weights
EXPORT_OUT ?= out/export

.PHONY: weights export verify bench-all

# Ship the final stage-2 weights of $(RUN) with their ONNX graphs (dynamic fp32 and the ONNX Runtime int8).
weights: $(VENV)/.installed
	cp $(RUN)/dmfnet.safetensors $(WEIGHTS)/dmfnet-edge.safetensors
	cp $(RUN)/dmfnet.json $(WEIGHTS)/dmfnet-edge.json
	$(BIN)/dmfnet-export onnx --model edge -o $(WEIGHTS) --dynamic --name dmfnet-edge-fp32
	$(BIN)/dmfnet-export quantize --onnx $(WEIGHTS)/dmfnet-edge-fp32.onnx --precision int8 --target onnxruntime \
	    --method $(INT8_METHOD) --calibration calibration/harvard-train-16.json --plot docs/figures/int8_sensitivity.png \
	    -o $(WEIGHTS)/dmfnet-edge-int8-onnxruntime.onnx

# The other recipes from the shipped weights: static fp32, fp16 (AutoCast), int8 Q/DQ for TensorRT (with the
# mixed-precision plan of the shipped ONNX Runtime INT8 graph), plugin graph.
export: $(VENV)/.installed
	$(BIN)/dmfnet-export onnx --model edge -o $(EXPORT_OUT)
	$(BIN)/dmfnet-export onnx --model edge -o $(EXPORT_OUT) --trt-plugins
	$(BIN)/dmfnet-export quantize --onnx $(WEIGHTS)/dmfnet-edge-fp32.onnx --precision fp16 -o $(EXPORT_OUT)/dmfnet-edge-fp16.onnx
	$(BIN)/dmfnet-export quantize --onnx $(WEIGHTS)/dmfnet-edge-fp32.onnx --precision int8 --target tensorrt \
	    --method $(INT8_METHOD) --calibration calibration/harvard-train-16.json \
	    --keep-fp32 $(WEIGHTS)/dmfnet-edge-int8-onnxruntime.onnx -o $(EXPORT_OUT)/dmfnet-edge-int8-tensorrt.onnx

# Accuracy gates of every graph against the PyTorch reference on the whole validation split.
verify: $(VENV)/.installed
	$(BIN)/dmfnet-export verify --model edge --pairs $(DATA)/val --report out/verify \
	    --onnx $(WEIGHTS)/dmfnet-edge-fp32.onnx $(WEIGHTS)/dmfnet-edge-int8-onnxruntime.onnx \
	    $(EXPORT_OUT)/dmfnet-edge-fp16.onnx $(EXPORT_OUT)/dmfnet-edge-int8-tensorrt.onnx

bench-all: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_cpu.py
	$(BIN)/python benchmarks/bench_onnx_cpu.py --int8-trt $(EXPORT_OUT)/dmfnet-edge-int8-tensorrt.onnx --profile
	$(BIN)/python benchmarks/bench_volume.py
