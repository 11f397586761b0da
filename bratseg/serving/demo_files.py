"""Where the Gradio demo keeps files: one private folder per process, expired while it runs
and removed when it exits.

Uploads are patient data. Gradio keeps every upload and every returned file in its cache
(``GRADIO_TEMP_DIR``, by default one folder shared by every Gradio app on the machine) and
removes them only on a clean shutdown or a later restart. :func:`private_cache` points
Gradio at a fresh folder of this process instead (set before the demo is built: Gradio
reads it then); :func:`remove_on_exit` removes it at interpreter exit, which ``app.py``
also reaches on SIGTERM. While running, Gradio's ``delete_cache`` and
:class:`OutputFolder`'s pruning expire old files.

No Gradio import here: this module runs before Gradio is imported.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

GRADIO_TEMP_ENV = "GRADIO_TEMP_DIR"
_PREFIX = "bratseg-demo-"
_lock = threading.Lock()
_cache: Path | None = None


def remove_on_exit(path: Path) -> None:
    """Remove ``path`` (a folder) when the interpreter exits."""
    atexit.register(shutil.rmtree, str(path), True)


def private_cache() -> Path:
    """This process's own Gradio cache folder, made on first call inside the configured one
    (``GRADIO_TEMP_DIR`` or the temp directory), exported as ``GRADIO_TEMP_DIR`` and removed
    at exit. Later calls return the same folder."""
    global _cache
    with _lock:
        if _cache is None or not _cache.is_dir():
            base = os.environ.get(GRADIO_TEMP_ENV) or tempfile.gettempdir()
            Path(base).mkdir(parents=True, exist_ok=True)
            _cache = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base))
            remove_on_exit(_cache)
            os.environ[GRADIO_TEMP_ENV] = str(_cache)
        return _cache


class OutputFolder:
    """Files the demo writes for download (segmentations, reports), in a private folder
    inside :func:`private_cache`.

    Gradio copies each returned file into its cache, so our copy is only needed briefly;
    entries older than ``max_age`` seconds are pruned at each write, and the folder goes
    with the cache at exit.
    """

    def __init__(self, max_age: float = 3600.0):
        self.max_age = max_age
        self._root: Path | None = None
        self._lock = threading.Lock()

    def new_file(self, name: str) -> Path:
        """A path named ``name`` in a new folder of its own (two cases may share a name)."""
        with self._lock:
            if self._root is None or not self._root.is_dir():
                self._root = Path(tempfile.mkdtemp(prefix="outputs-", dir=private_cache()))
            cutoff = time.time() - self.max_age
            for entry in self._root.iterdir():
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
            folder = self._root / uuid.uuid4().hex
            folder.mkdir()
        return folder / name
