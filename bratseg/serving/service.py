"""One loaded model shared by every request of a server, with bounded concurrency.

A prediction holds four float32 volumes plus the network's activations (several hundred
MB for a BraTS case), so the number of predictions running at once is capped by a
semaphore whatever the web server's thread count; extra requests wait their turn.

Example:
    >>> import contextlib, io, tempfile, pathlib
    >>> from bratseg.synthetic import write_synthetic_case
    >>> case = write_synthetic_case(pathlib.Path(tempfile.mkdtemp()) / "SYNTHETIC_S", shape=(64, 64, 24))
    >>> with contextlib.redirect_stdout(io.StringIO()):  # smp announces the weights it loads
    ...     service = InferenceService(max_concurrent=1)
    >>> service.ready, service.segment(case).labels.shape
    (True, (64, 64, 24))
"""

from __future__ import annotations

import threading
from pathlib import Path

from bratseg.data.io import CaseVolumes
from bratseg.data.layout import Case
from bratseg.errors import BratsegError, ModelLoadError
from bratseg.inference.predictor import Prediction, Segmenter, from_pretrained


class ServiceBusyError(BratsegError):
    """No prediction slot freed up within the wait allowed (HTTP 503)."""


class InferenceService:
    """Loads a model folder once and runs at most ``max_concurrent`` predictions at a time.

    Args:
        model_dir: model folder (``bratseg export``); None is the model shipped in bratseg.
        max_concurrent: predictions allowed to run at once; the rest wait.
        background: load the model in a thread, so a server can answer (``/healthz`` 503)
            while it loads; :attr:`ready` turns True once it has.
        segmenter: an already loaded :class:`Segmenter` to use instead of loading one.
        wait_timeout: seconds a request may wait for a free slot (None: no limit) before
            :class:`ServiceBusyError`.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        max_concurrent: int = 2,
        *,
        background: bool = False,
        segmenter: Segmenter | None = None,
        wait_timeout: float | None = None,
    ):
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.max_concurrent = max_concurrent
        self.wait_timeout = wait_timeout
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._count_lock = threading.Lock()
        self._active = 0
        self.peak_concurrency = 0
        """Most predictions ever seen running at once (for monitoring and tests)."""
        self.error: BaseException | None = None
        """Why the model failed to load, if it did."""
        self._loaded = threading.Event()
        self._segmenter: Segmenter | None = segmenter
        if segmenter is not None:
            self._loaded.set()
        elif background:
            threading.Thread(target=self._load, name="bratseg-model-load", daemon=True).start()
        else:
            self._load()
            if self.error is not None:
                raise self.error

    def _load(self) -> None:
        try:
            self._segmenter = from_pretrained(self.model_dir)
        except BaseException as exc:  # noqa: BLE001 - reported through .error and /healthz
            self.error = exc if isinstance(exc, BratsegError) else ModelLoadError(f"{self.model_dir}: {exc}")
        finally:
            self._loaded.set()

    @property
    def ready(self) -> bool:
        """True once the model is loaded and usable."""
        return self._loaded.is_set() and self._segmenter is not None

    @property
    def active(self) -> int:
        """Predictions running now."""
        return self._active

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until loading has finished (or ``timeout``); True when the model is usable."""
        self._loaded.wait(timeout)
        return self.ready

    @property
    def segmenter(self) -> Segmenter:
        """The loaded :class:`Segmenter`, waiting for a background load to finish."""
        self._loaded.wait()
        if self._segmenter is None:
            raise self.error or ModelLoadError("the model is not loaded")
        return self._segmenter

    def segment(self, case: Case | CaseVolumes | str | Path) -> Prediction:
        """Load, validate and predict ``case`` once a slot is free.

        Raises :class:`~bratseg.errors.InvalidCaseError` for bad input,
        :class:`ServiceBusyError` when no slot frees within ``wait_timeout`` and
        :class:`~bratseg.errors.ModelLoadError` when the model could not be loaded.
        """
        segmenter = self.segmenter
        if not self._slots.acquire(timeout=self.wait_timeout):  # None: wait as long as it takes
            raise ServiceBusyError(f"the server is busy ({self.max_concurrent} predictions running); try again")
        try:
            with self._count_lock:
                self._active += 1
                self.peak_concurrency = max(self.peak_concurrency, self._active)
            # Loading happens inside the slot too: the input volumes are most of the memory.
            return segmenter.segment(case)
        finally:
            with self._count_lock:
                self._active -= 1
            self._slots.release()
