"""Launch the bratseg Gradio demo: ``python app.py [--host H] [--port P] [--model MODEL_DIR]``.

Serves on 127.0.0.1:7860 by default; ``BRATSEG_HOST`` / ``BRATSEG_PORT`` set the defaults,
command-line flags override them. The model (by default the one shipped in bratseg) is
loaded once, before the page is served. Uploads and outputs stay in a private folder of
the process (inside ``GRADIO_TEMP_DIR`` when set), removed on exit and on SIGTERM. Nothing
is fetched from the network: analytics and version checks are off and the page's assets
come from the local Gradio install; the 3-D viewer's NiiVue is vendored in bratseg.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

# Before Gradio and huggingface_hub are imported: they read these at import time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _env_port(default: int = 7860) -> int:
    value = os.environ.get("BRATSEG_PORT")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        sys.exit(f"app.py: error: BRATSEG_PORT={value!r} is not a port number")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the bratseg brain-tumour segmentation demo (Gradio).")
    parser.add_argument(
        "--host", default=os.environ.get("BRATSEG_HOST") or "127.0.0.1", help="interface (env BRATSEG_HOST)"
    )
    parser.add_argument("--port", type=int, default=_env_port(), help="port (env BRATSEG_PORT; default 7860)")
    parser.add_argument("--model", type=Path, help="model folder from `bratseg export` (default: the shipped model)")
    parser.add_argument("--concurrency", type=int, default=2, help="predictions run at once (default 2)")
    parser.add_argument("--max-upload-mb", type=int, default=1024, help="largest upload accepted (default 1024)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request is noise
    from bratseg.serving.demo_files import private_cache

    # Uploads are patient data: keep them in a folder of this process, removed at exit,
    # chosen before Gradio is imported (it reads GRADIO_TEMP_DIR then).
    cache = private_cache()
    logging.getLogger("bratseg.gradio").info("uploads and outputs in %s (removed at exit)", cache)
    from bratseg.errors import BratsegError
    from bratseg.serving.gradio_app import build_demo, launch
    from bratseg.serving.service import InferenceService

    try:
        service = InferenceService(args.model, max_concurrent=args.concurrency)
    except BratsegError as exc:
        print(f"app.py: error: cannot load the model: {exc}", file=sys.stderr)
        return 2
    demo = build_demo(service, concurrency=args.concurrency)

    def stop(*_: object) -> None:
        # SIGTERM (docker stop, systemd, a test tearing down) would end the process without
        # running atexit, leaving uploads behind: stop the server, then exit normally.
        demo.close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    launch(demo, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
