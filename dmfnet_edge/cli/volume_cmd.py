"""`dmfnet fuse-volume`: fuse every slice of co-registered MRI and CT/PET/SPECT volumes."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from dmfnet_edge import __version__
from dmfnet_edge.cli.common import add_model_options, runner_from
from dmfnet_edge.cli.progress import bar
from dmfnet_edge.cli.types import int_range
from dmfnet_edge.errors import InputError
from dmfnet_edge.io.output_guard import check_replaceable, refuse_overlap
from dmfnet_edge.io.volume_writers import write_dicom_series, write_nifti
from dmfnet_edge.io.volumes import read_volume
from dmfnet_edge.reporting.provenance import provenance
from dmfnet_edge.volume_pipeline import (
    IntensitySettings,
    check_frames,
    check_geometry,
    check_mri,
    frame_of_reference,
    fuse_volume,
    other_modality,
    resample_onto,
)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mri", required=True, type=Path, help="DICOM series folder or NIfTI file")
    p.add_argument("--other", required=True, type=Path, help="CT/PET/SPECT: DICOM series folder or NIfTI file")
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="OUT.nii / OUT.nii.gz (NIfTI) or a folder (DICOM derived series)")
    p.add_argument("--other-modality", choices=["CT", "PET", "SPECT"], help="needed when the file has no tag")
    p.add_argument("--mri-intensity", help="percentile[:LO,HI] | minmax | window:C,W | none (default percentile)")
    p.add_argument("--other-intensity", help="CT: brain|subdural|stroke|bone|soft-tissue|window:C,W; PET/SPECT: "
                                              "percentile[:LO,HI] | minmax | none")
    p.add_argument("--colormap", help="pseudo-colour for grey PET/SPECT: jet, hot, rainbow, inferno, turbo, none")
    p.add_argument("--resample", action="store_true", help="resample the other volume onto the MRI grid")
    p.add_argument("--assume-registered", action="store_true",
                   help="accept DICOM series with different frames of reference (you vouch that they are "
                        "co-registered)")
    p.add_argument("--mri-series", help="SeriesInstanceUID when the MRI folder holds several series")
    p.add_argument("--other-series", help="SeriesInstanceUID when the other folder holds several series")
    p.add_argument("--batch", type=int_range(1, 64),
                   help="slices per network call (default: 1 on CPU backends, measured faster on small CPUs; "
                        "8 on GPU backends)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous output of fuse-volume (recognised by its .provenance.json); "
                        "anything else is refused")
    add_model_options(p)


def _is_nifti(path: Path) -> bool:
    return path.name.endswith(".nii") or path.name.endswith(".nii.gz")


def _check_output(args: argparse.Namespace) -> Path:
    """The output may not touch the inputs; --overwrite replaces only a previous fuse-volume output. Returns
    the provenance sidecar's path."""
    inputs = {"--mri": args.mri, "--other": args.other}
    refuse_overlap("-o", args.output, inputs)
    named = Path(os.path.abspath(args.output))  # '-o .' has no name to put the sidecar beside
    sidecar = named.with_name(named.name + ".provenance.json")
    refuse_overlap("-o", sidecar, inputs)
    if args.output.exists() and _is_nifti(args.output) and not args.overwrite:
        raise InputError(f"{args.output}: exists; pass --overwrite to replace it")
    if args.overwrite:
        check_replaceable(args.output, sidecar, "dmfnet fuse-volume")
    return sidecar


def run(args: argparse.Namespace) -> int:
    sidecar = _check_output(args)
    started = time.perf_counter()
    mri, other = read_volume(args.mri, args.mri_series), read_volume(args.other, args.other_series)
    check_mri(mri)
    modality = other_modality(other, args.other_modality)
    check_frames(mri, other, args.assume_registered)
    if args.resample:
        other = resample_onto(other, mri)
    check_geometry(mri, other)
    runner = runner_from(args)
    loaded = time.perf_counter()
    settings = IntensitySettings(args.mri_intensity, args.other_intensity, args.colormap)
    batch = args.batch or (8 if runner.backend in ("gpu", "tensorrt") else 1)
    with bar(mri.slices, f"fusing {mri.slices} slices on {runner.backend}", "slice") as progress:
        fused = fuse_volume(runner, mri, other, modality, settings, batch, progress.update)
    weights = runner.describe().get("weights_sha256") or "unrecorded"
    description = f"DM-FNet fusion MRI+{modality}; model {runner.model_name}; dmfnet-edge {__version__}; " \
                  f"weights {weights[:12]}"
    written = time.perf_counter()

    def provenance_record(outputs: list[Path]) -> tuple[Path, bytes]:
        # made once the output is encoded and staged, and staged itself before the output is published: the
        # two land together or neither does (a full disk fails here, before anything changed)
        done = time.perf_counter()
        seconds = {**fused.seconds, "read_and_check": round(loaded - started, 4),
                   "write": round(done - written, 4), "total": round(done - started, 4)}
        geometry = {"resampled": bool(args.resample), "assumed_registered": bool(args.assume_registered),
                    "frames_of_reference": {"mri": frame_of_reference(mri), "other": frame_of_reference(other)}}
        record = provenance(mri, other, modality, fused.intensity, runner.describe(), [str(p) for p in outputs],
                            seconds, geometry)
        return sidecar, record.encode()

    if _is_nifti(args.output):
        write_nifti(args.output, fused.pixels, mri, description, provenance_record)
    else:
        write_dicom_series(args.output, fused.pixels, mri, other, description, args.overwrite, provenance_record)
    done = time.perf_counter()
    print(f"{args.output}: {mri.slices} slices ({'RGB' if fused.pixels.ndim == 4 else 'grey'}) in "
          f"{done - started:.1f} s on {runner.backend}; provenance: {sidecar}")
    return 0


COMMANDS = {"fuse-volume": (configure, run)}
