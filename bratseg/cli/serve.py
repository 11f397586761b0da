"""``bratseg serve [--host H] [--port P] [--model MODEL_DIR] [--data-root DIR]``: the Flask app
served with waitress (:func:`bratseg.serving.server.serve`).

The options in megabytes become the server's byte limits here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_MIB = 1024 * 1024


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="serve the Flask app with waitress")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument(
        "--model", help="model folder or Hugging Face Hub id namespace/name[@revision] (default: the shipped model)"
    )
    p.add_argument("--data-root", type=Path, help="server-side paths are allowed beneath this folder only")
    p.add_argument("--max-upload-mb", type=int, default=200, help="largest request body; larger gets 413")
    p.add_argument("--max-unzipped-mb", type=int, default=1024, help="largest total size a zipped case may unzip to")
    p.add_argument(
        "--threads", type=int, default=8, help="waitress request threads; two always stay free for /healthz and static"
    )
    p.add_argument("--max-concurrent", type=int, default=2, help="predictions run at once")
    p.add_argument(
        "--max-queue",
        type=int,
        help="predictions that may wait for a slot (default: the threads left after --max-concurrent and the two "
        "kept free); more get 503 with Retry-After",
    )
    p.add_argument(
        "--max-case-mb",
        type=int,
        default=500,
        help="the most a case's images may take once loaded (header dtype x shape, at least float32); more gets 413",
    )
    p.set_defaults(func=run_serve)
    return p


def run_serve(args: argparse.Namespace) -> None:
    """Serve until interrupted; an unusable ``--data-root`` fails before the model loads."""
    from bratseg.serving.server import serve

    serve(
        host=args.host,
        port=args.port,
        model=args.model,
        data_root=args.data_root,
        max_upload_bytes=int(args.max_upload_mb) * _MIB,
        max_unzipped_bytes=int(args.max_unzipped_mb) * _MIB,
        threads=args.threads,
        max_concurrent=args.max_concurrent,
        max_queue=args.max_queue,
        max_case_bytes=int(args.max_case_mb) * 1_000_000,
    )
