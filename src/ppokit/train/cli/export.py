"""``ppokit export RUN_DIR --format {onnx,torchscript,exported-program}``: the command line.

Everything that can be refused is refused before torch is imported: an unknown format, a run
without the checkpoint asked for, ``onnx`` without the ``export`` extra installed.
The work is :func:`ppokit.train.deploy.export.export_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import tyro

from ppokit.train.cli.arguments import UsageError
from ppokit.train.records.rundir import checkpoint_path, holds_run, record_written

__all__ = ["EXPORT_FORMATS", "ExportArgs", "run_export"]

#: the formats and the modules each needs beyond torch (kept here: no torch import)
EXPORT_FORMATS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxscript"),
    "torchscript": (),
    "exported-program": (),
}


@dataclass(frozen=True)
class ExportArgs:
    """Write a run's deterministic policy, observation normalisation folded in, for
    deployment: raw observation in, action out (clipped to the bounds of a Box space)."""

    run_dir: tyro.conf.Positional[Path]
    """Run directory holding checkpoints/."""
    format: str = "onnx"
    """onnx (needs ppokit[export]), torchscript or exported-program."""
    out: Path | None = None
    """Output file (default: RUN_DIR/policy-<checkpoint>.onnx | .ts.pt | .pt2)."""
    checkpoint: str = "latest"
    """latest, best (kept by training with --eval-every) or a file name in checkpoints/."""


def run_export(argv: list[str]) -> int:
    """``ppokit export``'s handler: parse and check, then export; returns the exit code."""
    args = tyro.cli(ExportArgs, args=argv, prog="ppokit export")
    if args.format not in EXPORT_FORMATS:
        raise UsageError(
            f"--format {args.format!r} is not an export format; expected one of "
            f"{', '.join(EXPORT_FORMATS)}."
        )
    missing = [m for m in EXPORT_FORMATS[args.format] if find_spec(m) is None]
    if missing:
        raise UsageError(
            f"--format {args.format} needs {', '.join(missing)}, which is not "
            "installed; install the export extra: pip install 'ppokit[export]'."
        )
    try:
        checkpoint_path(args.run_dir, args.checkpoint)
    except FileNotFoundError as err:
        raise UsageError(str(err)) from None
    if args.out is not None and args.out.is_dir():
        raise UsageError(f"--out {str(args.out)!r} is a directory; pass a file name.")
    from ppokit.train.deploy.export import default_export_path, export_policy

    out = args.out or default_export_path(args.run_dir, args.format, args.checkpoint)
    try:
        path = export_policy(args.run_dir, args.format, out, checkpoint=args.checkpoint)
    except ValueError as err:
        raise UsageError(str(err)) from None
    inside = out.resolve().parent == args.run_dir.resolve()
    if inside and holds_run(args.run_dir):
        record_written(args.run_dir, out.name)
    print(f"export: {path}")
    return 0
