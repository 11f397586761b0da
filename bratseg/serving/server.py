"""The waitress server behind ``bratseg serve``: threads, the prediction queue, start-up.

The Flask app itself (routes, forms, errors) is :mod:`bratseg.serving.flask_app`; this module
decides how many requests may run and wait, so that ``/healthz`` and static files never wait
behind predictions, and starts waitress with the model loading in the background.
"""

from __future__ import annotations

from pathlib import Path

from bratseg.errors import BratsegError
from bratseg.serving.flask_app import DEFAULT_MAX_UNZIPPED_BYTES, DEFAULT_MAX_UPLOAD_BYTES, create_app
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


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    model: str | Path | None = None,
    data_root: Path | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_unzipped_bytes: int = DEFAULT_MAX_UNZIPPED_BYTES,
    threads: int = 8,
    max_concurrent: int = 2,
    max_queue: int | None = None,
    max_case_bytes: int = DEFAULT_MAX_CASE_BYTES,
) -> None:
    """Serve the app with waitress (``bratseg serve``); blocks until interrupted.

    The model (a folder, a Hub id, or None: the shipped model) loads in the background:
    ``/healthz`` answers 503 until it is ready. At most ``max_concurrent`` predictions run at
    once and :func:`serve_plan`'s queue (``max_queue``, or what ``threads`` leave) waits; more
    are answered 503 with ``Retry-After`` at once, so health checks and static files never
    wait behind predictions. The size limits are those of
    :func:`~bratseg.serving.flask_app.create_app`.
    """
    import waitress

    if data_root is not None and not Path(data_root).is_dir():
        raise BratsegError(f"{data_root}: data root not found")  # before loading a model for nothing
    threads, max_waiting = serve_plan(threads, max_concurrent, max_queue)
    service = InferenceService(model, max_concurrent=max_concurrent, background=True, max_waiting=max_waiting)
    app = create_app(
        service,
        data_root=data_root,
        max_upload_bytes=max_upload_bytes,
        max_unzipped_bytes=max_unzipped_bytes,
        max_case_bytes=max_case_bytes,
    )
    print(
        f"bratseg: serving on http://{host}:{port} ({threads} threads, "
        f"{service.max_concurrent} predictions at once, {max_waiting} waiting); model loading...",
        flush=True,
    )
    waitress.serve(
        app,
        host=host,
        port=port,
        threads=threads,
        # waitress's own cap, a little above Flask's so Flask answers with a clear 413.
        max_request_body_size=max_upload_bytes + 1024 * 1024,
        ident="bratseg",
    )
