"""``bratseg predict``: segment one case, explicit files, or a folder of cases.

    bratseg predict CASE_DIR --output OUT.nii.gz [--model MODEL_DIR]
    bratseg predict --flair F --t1ce F [--t1 F] [--t2 F] --output OUT.nii.gz
    bratseg predict DATA_DIR --output OUT_DIR          # writes OUT_DIR/<case>.nii.gz

The model is loaded once. In folder mode a case that cannot be read is reported and skipped,
and the command fails (exit code 2) at the end, naming the cases that failed. Inputs and
outputs are checked before the model is loaded, so a typo fails in well under a second.

Start-up matters here (a CLI call is a fresh process): this module imports only what
prediction needs (torch with the predictor, segmentation-models-pytorch with the model);
MONAI, Gradio and Flask are not imported.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bratseg.data.layout import MODALITIES, Case, case_from_folder, modality_of, nifti_stem
from bratseg.errors import BratsegError, InvalidCaseError

_REGIONS_SHOWN = ("whole tumour", "tumour core", "enhancing tumour")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_predict_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``predict`` sub-command's arguments (``bratseg.cli`` sets its handler)."""
    p = sub.add_parser(
        "predict",
        help="segment a case, explicit files, or a folder of cases",
        description="Segment one case, explicit files, or a folder of cases. Writes BraTS 2020 label maps "
        "(0/1/2/4) with the input's shape, affine and header, and prints each case's time and region volumes.",
    )
    p.add_argument("case", type=Path, nargs="?", help="case folder, or a folder of case folders")
    p.add_argument("--output", "-o", type=Path, required=True, help="OUT.nii.gz for one case, a folder for many")
    p.add_argument("--model", type=Path, help="model folder (default: the model shipped with bratseg)")
    for m in MODALITIES:
        required = " (required with explicit files)" if m in ("flair", "t1ce") else ""
        p.add_argument(f"--{m}", type=Path, metavar="FILE", help=f"{m.upper()} NIfTI file, instead of CASE{required}")
    p.add_argument("--tta", action="store_true", help="average over in-plane flips (about 4x slower)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--threads", type=_positive_int, help="CPU threads (default: one per core)")
    p.add_argument("--batch-size", type=_positive_int, help="slices per forward pass")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or per-case lines")
    return p


def _is_nifti_name(path: Path) -> bool:
    return nifti_stem(path) is not None


def _is_case_folder(folder: Path) -> bool:
    """A folder that directly holds an image of a known naming (FLAIR or not: a case that
    lacks its FLAIR must be reported, not silently passed over)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    return any(e.is_file() and (hit := modality_of(e.name)) is not None and hit[0] != "seg" for e in entries)


def discover_cases(root: Path) -> list[Path]:
    """Every case folder beneath ``root`` (itself excluded), sorted by name. Unlike
    :func:`bratseg.data.layout.find_cases` it does not open the cases, so one bad case cannot
    stop the others; it does not look inside a case folder (BraTS Toolkit keeps other
    algorithms' outputs there), and it takes symbolic links to case folders as cases."""
    found = []
    for dirpath, dirnames, _files in os.walk(root):
        dirnames.sort()
        for d in list(dirnames):
            if _is_case_folder(Path(dirpath) / d):
                found.append(Path(dirpath) / d)
                dirnames.remove(d)
    return sorted(found, key=lambda p: (p.name, str(p)))


def _explicit_case(args: argparse.Namespace) -> Case | None:
    given = {m: getattr(args, m) for m in MODALITIES if getattr(args, m, None) is not None}
    if not given:
        return None
    if args.case is not None:
        raise BratsegError("give either CASE or explicit files (--flair/--t1ce/...), not both")
    for m in ("flair", "t1ce"):
        if m not in given:
            raise InvalidCaseError(None, f"--{m} is required with explicit files (FLAIR and T1ce are needed)")
    for m, path in given.items():
        if not path.is_file():
            raise InvalidCaseError(path, f"file not found (--{m})")
    case_id = nifti_stem(args.output) if _is_nifti_name(args.output) else None
    return Case.from_files(given["flair"], given["t1ce"], given.get("t1"), given.get("t2"), case_id=case_id)


def _plan(args: argparse.Namespace) -> tuple[list[Case | Path], list[Path], bool]:
    """The inputs and where each output goes, and whether this is folder mode. Raises
    :class:`BratsegError` for anything that can be known wrong before the model loads."""
    case = _explicit_case(args)
    output: Path = args.output
    if case is not None:
        target = output if _is_nifti_name(output) else output / f"{case.case_id}.nii.gz"
        return [case], [target], False
    if args.case is None:
        raise BratsegError("give a case folder, a folder of cases, or --flair and --t1ce files")
    src: Path = args.case
    if not src.exists():
        raise InvalidCaseError(src, "does not exist")
    if src.is_file():
        raise InvalidCaseError(src, "is a file; give a case folder, or the images with --flair and --t1ce")
    if _is_case_folder(src):
        one = case_from_folder(src)  # a bad single case fails now, before the model loads
        target = output if _is_nifti_name(output) else output / f"{one.case_id}.nii.gz"
        return [one], [target], False
    folders = discover_cases(src)
    if not folders:
        raise InvalidCaseError(src, "holds no case folders (no NIfTI files named like BraTS modalities)")
    if _is_nifti_name(output):
        raise BratsegError(f"{output}: {src.name} is a folder of {len(folders)} cases; --output must be a folder")
    if output.exists() and not output.is_dir():
        raise BratsegError(f"{output}: exists and is not a folder")
    return list(folders), [output / f"{f.name}.nii.gz" for f in folders], True


def _volumes_line(volumes: dict[str, float]) -> str:
    return ", ".join(f"{name} {volumes[name]:.1f} cm3" for name in _REGIONS_SHOWN)


def run_predict(args: argparse.Namespace) -> None:
    """Run ``bratseg predict`` (see the module docstring). Raises :class:`BratsegError` for
    bad input, which ``bratseg.cli.main`` turns into one line and exit code 2."""
    t_start = time.perf_counter()
    inputs, targets, folder_mode = _plan(args)
    if folder_mode:
        seen: dict[Path, Path] = {}
        for src, dst in zip(inputs, targets):
            if dst in seen:
                raise BratsegError(f"cases {seen[dst]} and {src} would both write {dst}; rename one folder")
            seen[dst] = src

    from bratseg.inference.predictor import DEFAULT_BATCH_SIZE, Segmenter

    segmenter = Segmenter.from_pretrained(
        args.model,
        precision=args.precision,
        flip_tta=args.tta,
        threads=args.threads,
        batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
    )
    t_loaded = time.perf_counter()
    show = not args.quiet
    bar = None
    if folder_mode and show:
        from tqdm import tqdm

        bar = tqdm(total=len(inputs), desc="predict", unit="case", file=sys.stderr)

    def say(line: str, error: bool = False) -> None:
        # Results to stdout, problems to stderr; through tqdm while its bar is drawn, so
        # the bar is redrawn below the line instead of being broken by it.
        stream = sys.stderr if error else sys.stdout
        if bar is not None:
            bar.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)

    if show:
        say(f"model {args.model or 'shipped'} loaded in {t_loaded - t_start:.2f} s ({segmenter.precision})")

    failed: list[tuple[str, str]] = []
    for src, dst in zip(inputs, targets):
        name = src.case_id if isinstance(src, Case) else src.name
        t0 = time.perf_counter()
        try:
            pred = segmenter.segment(src)
            try:
                pred.save(dst)
            except OSError as exc:
                raise BratsegError(f"{dst}: cannot write the label map ({exc.strerror or exc})") from None
        except Exception as exc:
            # In folder mode one bad case must not cost the others, whatever went wrong
            # with it; alone, a typed error is the CLI's one-line message and anything else
            # is a bug whose traceback we want.
            if not folder_mode:
                raise
            reason = str(exc) if isinstance(exc, BratsegError) else f"{type(exc).__name__}: {exc}"
            failed.append((name, reason))
            say(f"{name}: skipped: {reason}", error=True)
        else:
            if show:
                say(
                    f"{name}: {pred.seconds:.2f} s prediction, {time.perf_counter() - t0:.2f} s with I/O; "
                    f"{_volumes_line(pred.region_volumes())} -> {dst}"
                )
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    if failed:
        names = ", ".join(n for n, _ in failed)
        raise BratsegError(f"{len(failed)} of {len(inputs)} cases failed ({names}); the others were written")
    if show and folder_mode:
        print(f"{len(inputs)} cases written to {args.output} in {time.perf_counter() - t_start:.1f} s")
