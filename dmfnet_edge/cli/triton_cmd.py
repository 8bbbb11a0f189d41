"""`dmfnet-export triton`: a Triton Inference Server model repository for an exported graph or engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from dmfnet_edge.cli.types import THREADS, int_range
from dmfnet_edge.errors import InputError
from dmfnet_edge.io.output_guard import refuse_overlap


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--onnx", type=Path, help="an exported graph with its manifest (platform onnxruntime_onnx)")
    src.add_argument("--engine", type=Path, help="a full-TensorRT engine with its manifest (platform tensorrt_plan)")
    p.add_argument("-o", "--out", required=True, type=Path, help="the repository folder (new or empty)")
    p.add_argument("--name", default="dmfnet_edge", help="the model's name on the server")
    p.add_argument("--max-batch", type=int_range(1, 1024), default=8,
                   help="max_batch_size where the model's batch dimension is free (an engine's profile caps it)")
    p.add_argument("--preferred-batch", type=int_range(1, 1024), nargs="+", default=[4, 8],
                   help="batch sizes dynamic batching waits to form")
    p.add_argument("--queue-delay-us", type=int_range(0, 10_000_000), default=2000,
                   help="how long a request may wait to be batched")
    p.add_argument("--instances", type=int_range(1, 64), default=1, help="model instances per device")
    p.add_argument("--kind", choices=["cpu", "gpu"], default="cpu", help="ONNX: CPU or GPU instances")
    p.add_argument("--threads", type=THREADS, help="ONNX Runtime intra-op threads per CPU instance")


def run(args: argparse.Namespace) -> int:
    from dmfnet_edge.runtime.triton_client import check_model_name
    from dmfnet_edge.serving.triton_repo import (
        ServingOptions,
        model_inputs,
        served_engine,
        served_onnx,
        write_repository,
    )

    check_model_name(args.name)
    if args.engine is not None and args.threads:
        raise InputError("--threads: ONNX Runtime's setting; an engine runs on the GPU")
    model = served_onnx(args.onnx) if args.onnx else served_engine(args.engine)
    refuse_overlap("--out", args.out, model_inputs(model))
    options = ServingOptions(name=args.name, max_batch=args.max_batch, preferred_batches=tuple(args.preferred_batch),
                             queue_delay_us=args.queue_delay_us, instances=args.instances, kind=args.kind,
                             threads=args.threads)
    folder, checked = write_repository(model, options, args.out)
    print((folder / "config.pbtxt").read_text(), end="")
    verdict = "checked against Triton's ModelConfig schema" if checked else \
        "not schema-checked: install the 'serve' extra (tritonclient) to check it"
    print(f"wrote {args.out}/: {folder.name}/config.pbtxt, {folder.name}/1/ ({verdict})")
    print(f"serve it: tritonserver --model-repository={args.out.resolve()}")
    return 0


COMMANDS = {"triton": (configure, run)}
