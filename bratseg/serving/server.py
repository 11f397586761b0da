"""The waitress server behind ``bratseg serve``: threads, the prediction queue, start-up.

The Flask app itself (routes, forms, errors) is :mod:`bratseg.serving.flask_app`; this module
decides how many requests may run and wait, so that ``/healthz`` and static files never wait
behind predictions, and starts waitress with the model loading in the background.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bratseg.errors import BratsegError
from bratseg.serving.flask_app import create_app
from bratseg.serving.service import InferenceService
from bratseg.serving.uploads import DEFAULT_MAX_CASE_BYTES

RESERVED_THREADS = 2  # waitress threads no prediction may hold: /healthz and static files


def serve_plan(threads: int, max_concurrent: int, max_queue: int | None = None) -> tuple[int, int]:
    """``(waitress threads, predictions allowed to wait)`` for a server.

    A request waiting for a prediction slot holds a waitress thread, so the queue is what
    the threads leave after the running predictions and :data:`RESERVED_THREADS`, which
    stay free for ``/healthz`` and static files. An explicit ``max_queue`` gets the threads
    it needs.
    """
    if max_queue is None:
        max_queue = max(0, threads - max_concurrent - RESERVED_THREADS)
    return max(threads, max_concurrent + max_queue + RESERVED_THREADS), max_queue


def serve(args: argparse.Namespace) -> None:
    """Serve the app with waitress (``bratseg serve``); blocks until interrupted.

    The model loads in the background: ``/healthz`` answers 503 until it is ready. At most
    ``--max-concurrent`` predictions run at once and :func:`serve_plan`'s queue waits; more
    are answered 503 with ``Retry-After`` at once, so health checks and static files never
    wait behind predictions.
    """
    import waitress

    max_upload = int(args.max_upload_mb) * 1024 * 1024
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise BratsegError(f"{args.data_root}: data root not found")  # before loading a model for nothing
    threads, max_waiting = serve_plan(args.threads, args.max_concurrent, getattr(args, "max_queue", None))
    service = InferenceService(args.model, max_concurrent=args.max_concurrent, background=True, max_waiting=max_waiting)
    max_case_mb = getattr(args, "max_case_mb", None)
    app = create_app(
        service,
        data_root=args.data_root,
        max_upload_bytes=max_upload,
        max_unzipped_bytes=int(args.max_unzipped_mb) * 1024 * 1024,
        max_case_bytes=DEFAULT_MAX_CASE_BYTES if max_case_mb is None else int(max_case_mb) * 1_000_000,
    )
    print(
        f"bratseg: serving on http://{args.host}:{args.port} ({threads} threads, "
        f"{service.max_concurrent} predictions at once, {max_waiting} waiting); model loading...",
        flush=True,
    )
    waitress.serve(
        app,
        host=args.host,
        port=args.port,
        threads=threads,
        # waitress's own cap, a little above Flask's so Flask answers with a clear 413.
        max_request_body_size=max_upload + 1024 * 1024,
        ident="bratseg",
    )
