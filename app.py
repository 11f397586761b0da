"""Launch the bratseg Gradio demo: ``python app.py [--host H] [--port P] [--model MODEL]``.

Serves on 127.0.0.1:7860 by default. The defaults come from the environment, first found:
host ``BRATSEG_HOST``, ``GRADIO_SERVER_NAME``; port ``BRATSEG_PORT``, ``GRADIO_SERVER_PORT``,
``PORT``; so on a Hugging Face Space (which sets ``GRADIO_SERVER_NAME=0.0.0.0``) it serves where
the Space expects. Command-line flags override them. ``--model`` (or ``BRATSEG_MODEL``) names a
model folder or a Hugging Face Hub id ``namespace/name[@revision]``; by default the model shipped
in bratseg. The model is loaded once, before the page is served. Uploads and outputs stay in a
private folder of the process (inside ``GRADIO_TEMP_DIR`` when set), removed on exit and on
SIGTERM. Nothing is fetched from the network unless a Hub id is named (then only the model,
into the Hugging Face cache): analytics and version checks are off and the page's assets come
from the local Gradio install; the 3-D viewer's NiiVue is vendored in bratseg.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

# Before Gradio and huggingface_hub are imported: they read these at import time
# (HF_HUB_OFFLINE too, set in main() unless a Hub id is to be fetched).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

HOST_VARIABLES = ("BRATSEG_HOST", "GRADIO_SERVER_NAME")
PORT_VARIABLES = ("BRATSEG_PORT", "GRADIO_SERVER_PORT", "PORT")


def _env_host(default: str = "127.0.0.1") -> str:
    return next((os.environ[v] for v in HOST_VARIABLES if os.environ.get(v)), default)


def _env_port(default: int = 7860) -> int:
    variable = next((v for v in PORT_VARIABLES if os.environ.get(v)), None)
    if variable is None:
        return default
    try:
        return int(os.environ[variable])
    except ValueError:
        sys.exit(f"app.py: error: {variable}={os.environ[variable]!r} is not a port number")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the bratseg brain-tumour segmentation demo (Gradio).")
    parser.add_argument(
        "--host", default=_env_host(), help="interface (env BRATSEG_HOST, GRADIO_SERVER_NAME; default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=_env_port(), help="port (env BRATSEG_PORT, GRADIO_SERVER_PORT, PORT; default 7860)"
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=os.environ.get("BRATSEG_MODEL") or None,
        help="model folder from `bratseg export`, or Hugging Face Hub id namespace/name[@revision] "
        "(env BRATSEG_MODEL; default: the shipped model)",
    )
    parser.add_argument("--concurrency", type=int, default=2, help="predictions run at once (default 2)")
    parser.add_argument("--max-upload-mb", type=int, default=1024, help="largest upload accepted (default 1024)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request is noise
    from bratseg.errors import BratsegError
    from bratseg.model.hub import is_hub_id, resolve_model

    if args.model is not None and is_hub_id(args.model):
        try:  # fetched (or found in the Hugging Face cache) before anything is served
            args.model = resolve_model(args.model)
        except BratsegError as exc:
            print(f"app.py: error: cannot load the model: {exc}", file=sys.stderr)
            return 2
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to fetch: Gradio's hub client stays offline
    from bratseg.serving.demo_files import private_cache

    # Uploads are patient data: keep them in a folder of this process, removed at exit,
    # chosen before Gradio is imported (it reads GRADIO_TEMP_DIR then).
    cache = private_cache()
    logging.getLogger("bratseg.gradio").info("uploads and outputs in %s (removed at exit)", cache)
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
