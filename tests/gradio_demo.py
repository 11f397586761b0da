"""The Gradio demo served in the test process, around an already loaded segmenter, for the
test modules that drive it through ``gradio_client``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def demo_client(segmenter, temp_dir: Path, download_files: str | bool = False) -> Iterator:
    """A ``gradio_client.Client`` of a demo on a free local port (one prediction at a time),
    with Gradio's files under ``temp_dir``; the demo closes when the block ends."""
    gradio_client = pytest.importorskip("gradio_client")
    from bratseg.serving.gradio_app import build_demo, launch
    from bratseg.serving.service import InferenceService

    patch = pytest.MonkeyPatch()
    patch.setenv("GRADIO_TEMP_DIR", str(temp_dir))
    patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_demo(InferenceService(segmenter=segmenter, max_concurrent=1), concurrency=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True)
    try:
        yield gradio_client.Client(f"http://127.0.0.1:{port}/", download_files=download_files, verbose=False)
    finally:
        demo.close()
        patch.undo()
