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

clean:
	rm -rf $(VENV) out build *.egg-info
