"""Examples shown under every command's --help (tests parse each of them with the real parser)."""

EXAMPLES: dict[str, dict[str, list[str]]] = {
    "dmfnet": {
        "fuse": [
            "dmfnet fuse --mri mri.png --other pet.png -o fused.png",
            "dmfnet fuse --mri mr.dcm --other ct.dcm --window-other 40,400 -o fused.png --backend torch",
            "dmfnet fuse --mri mri.nii.gz --other pet.nii.gz --slice 40 -o slice40.png --overwrite",
        ],
        "fuse-dir": [
            "dmfnet fuse-dir --pairs dmfnet_edge/samples --out out/demo --metrics",
            "dmfnet fuse-dir --pairs val/ --out out/val --batch 4 --precision int8 --json",
        ],
        "fuse-volume": [
            "dmfnet fuse-volume --mri MR_SERIES/ --other CT_SERIES/ -o out/fused-series --other-intensity brain",
            "dmfnet fuse-volume --mri mri.nii.gz --other pet.nii.gz --other-modality PET -o fused.nii.gz",
            "dmfnet fuse-volume --mri mri.nii.gz --other spect.nii.gz --other-modality SPECT --resample "
            "-o fused.nii.gz --overwrite --batch 1",
        ],
        "eval": [
            "dmfnet eval --pairs val/ --fused out/val",
            "dmfnet eval --pairs val/ --fused out/val --json out/val-metrics.json",
        ],
        "baseline": [
            "dmfnet baseline --method laplacian --pairs val/ --out out/laplacian",
            "dmfnet baseline --method average --pairs val/ --out out/average",
        ],
        "compare": [
            "dmfnet compare --pairs val/ --out out/compare",
            "dmfnet compare --pairs val/ --out out/compare --backend torch --figure-rows 3",
        ],
        "serve": [
            "dmfnet serve --threads 2",
            "dmfnet serve --onnx dmfnet_edge/weights/dmfnet-edge-fp32.onnx --http-port 9000 --grpc-port 9001 "
            "--metrics-port 9002 --max-batch 16 --preferred-batch 8 16",
        ],
        "train": [
            "dmfnet train stage1 --data train/ --val val/ --out runs/unet --preset edge --steps 3000",
            "dmfnet train stage2 --data train/ --val val/ --out runs/fusion --unet runs/unet/unet --steps 3000",
            "dmfnet train stage2 --data train/ --out runs/fusion --unet runs/unet/unet --resume",
            "dmfnet train stage2 --data train/ --val val/ --out runs/ft --unet edge --preset edge --init edge "
            "--feature-cache cache/edge --steps 5000 --lr 4e-4 --schedule cosine --warmup 100 --ema 0.999 "
            "--val-every 250",
        ],
        "info": [
            "dmfnet info --model edge",
            "dmfnet info --model paper --size 512",
        ],
    },
    "dmfnet-export": {
        "onnx": [
            "dmfnet-export onnx --model edge -o out/export --dynamic",
            "dmfnet-export onnx --model edge -o out/export --size 512 --batch 2",
            "dmfnet-export onnx --model edge -o out/export --trt-plugins",
        ],
        "calibrate": [
            "dmfnet-export calibrate --pairs train/ --exclude val/ --per-modality 16 -o calibration/set.json",
        ],
        "quantize": [
            "dmfnet-export quantize --onnx dmfnet_edge/weights/dmfnet-edge-fp32.onnx --recipe export/cpu-int8.yaml "
            "-o out/export/int8.onnx",
            "dmfnet-export quantize --onnx dmfnet_edge/weights/dmfnet-edge-fp32.onnx --precision fp16 "
            "-o out/export/dmfnet-edge-fp16.onnx",
            "dmfnet-export quantize --onnx dmfnet_edge/weights/dmfnet-edge-fp32.onnx --precision int8 "
            "--target tensorrt "
            "--calibration calibration/harvard-train-16.json -o out/export/dmfnet-edge-int8-tensorrt.onnx",
            "dmfnet-export quantize --onnx dmfnet_edge/weights/dmfnet-edge-fp32.onnx --precision int8 "
            "--calibration calibration/harvard-train-16.json --plot out/sensitivity.png -o out/export/int8.onnx",
        ],
        "verify": [
            "dmfnet-export verify --onnx out/export/dmfnet-edge-fp16.onnx --pairs val/ --report out/verify",
            "dmfnet-export verify --onnx a.onnx b.onnx --pairs val/ --per-modality 4 --report out/verify",
        ],
        "recipe": [
            "dmfnet-export recipe --list export",
            "dmfnet-export recipe export/workstation-rtx-fp16.yaml --out out/targets",
            "dmfnet-export recipe export --out out/targets --per-modality 4",
        ],
        "build": [
            "dmfnet-export build --recipe export/jetson-orin-int8.yaml --onnx out/targets/jetson-orin-int8/"
            "dmfnet-edge-int8-tensorrt.onnx --out out/engines",
            "dmfnet-export build --onnx out/export/dmfnet-edge-fp16.onnx --out out/engines --toolchain tensorrt-rtx",
            "dmfnet-export build --onnx dmfnet_edge/weights/dmfnet-edge-fp32.onnx --out out/engines "
            "--toolchain tensorrt-rtx --compute-capability sm86 --shapes 1x256x128:1x256x256:2x256x512",
            "dmfnet-export build --onnx out/export/dmfnet-edge-int8-tensorrt.onnx --out out/engines "
            "--toolchain tensorrt --timing-cache out/engines/timing.cache",
            "dmfnet-export build --onnx out/export/dmfnet-edge-int8-tensorrt.onnx --out out/engines "
            "--toolchain tensorrt-rtx --allow-int8-fallbacks fusion/attention.4",
            "dmfnet-export build --onnx out/export/dmfnet-edge-fp16.onnx --out out/engines --toolchain tensorrt-rtx "
            "--strip-weights",
        ],
        "inspect": [
            "dmfnet-export inspect out/engines/ENGINE.engine",
            "dmfnet-export inspect out/engines/ENGINE.engine --json",
        ],
        "profile": [
            "dmfnet-export profile --model edge --repeats 50 --budget-ms 1500",
            "dmfnet-export profile --model out/export/dmfnet-edge-fp16.onnx --backend onnxruntime --json p.json "
            "--plot p.png",
        ],
        "triton": [
            "dmfnet-export triton --onnx dmfnet_edge/weights/dmfnet-edge-fp32.onnx -o out/triton --threads 2",
            "dmfnet-export triton --onnx dmfnet_edge/weights/dmfnet-edge-fp32.onnx -o out/triton-gpu --kind gpu "
            "--instances 2 --max-batch 16 --preferred-batch 8 16",
            "dmfnet-export triton --engine out/engines/ENGINE.engine -o out/triton-trt",
        ],
    },
}
