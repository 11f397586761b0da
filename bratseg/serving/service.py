"""One loaded model shared by every request of a server, with bounded concurrency.

A prediction holds four float32 volumes plus the network's activations (several hundred
MB for a BraTS case), so the number of predictions running at once is capped by a
semaphore whatever the web server's thread count; extra requests wait their turn, at most
``max_waiting`` of them: a web server's request threads are finite, and a thread that
waits for a prediction slot cannot answer a health check. Beyond that bound a request is
refused at once with :class:`ServiceBusyError`, which carries a ``retry_after`` estimate.

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

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bratseg.data.io import CaseVolumes
from bratseg.data.layout import Case
from bratseg.errors import BratsegError, ModelLoadError
from bratseg.inference.prediction import Prediction
from bratseg.inference.predictor import Segmenter, from_pretrained
from bratseg.inference.segment import Preprocess, segment

log = logging.getLogger(__name__)

SERVICE_PREPROCESS: Preprocess = "none"
""":meth:`InferenceService.segment`'s default: the fast path, for callers that hold BraTS-space
cases (the web forms pass the user's choice, :data:`~bratseg.inference.segment.DEFAULT_PREPROCESS`
when none is given)."""


class ServiceBusyError(BratsegError):
    """No prediction slot is free and the queue is full, or none freed up within the wait
    allowed (HTTP 503); ``retry_after`` is a whole number of seconds worth waiting."""

    def __init__(self, message: str, retry_after: int = 30):
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self):
        return (type(self), (str(self), self.retry_after))


class CaseProcessingError(BratsegError):
    """A case passed the upload checks but failed while being loaded, predicted or drawn for
    a reason no input check foresaw (HTTP 422): the message names the case and the cause, so
    a user sees what happened instead of a bare server error."""


# Recent prediction times kept for the Retry-After estimate.
_RECENT = 8


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
        max_waiting: requests allowed to wait for a slot (None: no limit); one more is
            refused at once with :class:`ServiceBusyError`.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        max_concurrent: int = 2,
        *,
        background: bool = False,
        segmenter: Segmenter | None = None,
        wait_timeout: float | None = None,
        max_waiting: int | None = None,
    ):
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if max_waiting is not None and max_waiting < 0:
            raise ValueError("max_waiting must be at least 0")
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.max_concurrent = max_concurrent
        self.wait_timeout = wait_timeout
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._count_lock = threading.Lock()
        self._active = 0
        self._waiting = 0
        self.max_waiting = max_waiting
        self._recent: list[float] = []
        self._local = threading.local()  # per request thread: does it hold a reserved place?
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

    @property
    def waiting(self) -> int:
        """Requests waiting for a prediction slot now."""
        return self._waiting

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the recent mean prediction time times the
        queue ahead, per slot (30 s before any prediction has finished)."""
        with self._count_lock:
            mean = sum(self._recent) / len(self._recent) if self._recent else 30.0
            ahead = self._active + self._waiting
        return int(min(600, max(1, round(mean * max(1, ahead) / self.max_concurrent))))

    def _busy(self, why: str) -> ServiceBusyError:
        return ServiceBusyError(f"the server is busy ({why}); try again later", self.retry_after())

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

    @contextmanager
    def reserved(self) -> Iterator[None]:
        """Hold a place in the queue (running + waiting) for the block, or raise
        :class:`ServiceBusyError` at once when it is full; :meth:`segment` called inside the
        block (in the same thread) uses that place.

        A web request takes its place before reading its upload, so a burst is turned away
        before it costs disk and threads.
        """
        if getattr(self._local, "reserved", False):
            yield  # nested: the outer block holds the place
            return
        self._admit()
        self._local.reserved = True
        self._local.pending = True  # counted as waiting until segment() takes a slot
        try:
            yield
        finally:
            self._local.reserved = False
            if self._local.pending:
                with self._count_lock:
                    self._waiting -= 1

    def _admit(self) -> None:
        """Count a new request as waiting, or refuse it when running + waiting is full."""
        with self._count_lock:
            # One lock for the check and the count, so a burst cannot overshoot the bound.
            admitted = self._active + self._waiting
            full = self.max_waiting is not None and admitted >= self.max_concurrent + self.max_waiting
            if not full:
                self._waiting += 1
            running, waiting = self._active, self._waiting
        if full:  # outside the lock: the estimate takes it too
            raise self._busy(f"{running} predictions running, {waiting} waiting")

    def segment(
        self,
        case: Case | CaseVolumes | str | Path,
        preprocess: Preprocess = SERVICE_PREPROCESS,
        progress: Callable[[str], None] | None = None,
    ) -> Prediction:
        """Load, validate and predict ``case`` once a slot is free.

        ``preprocess`` picks the path as ``bratseg predict --preprocess`` does
        (:func:`~bratseg.inference.segment.segment`): ``none`` (the default) is the fast path
        for BraTS-space input, whose guards name what is not BraTS-like; ``auto`` also takes
        native scans (any grid, with skull) and DICOM study folders through the native pipeline,
        whose prediction is on the patient's grid (its ``native`` set); ``progress`` receives
        what each step did.

        Raises :class:`~bratseg.errors.BratsegError` subclasses only:
        :class:`~bratseg.errors.InvalidCaseError` (and the guards' refusals) for bad input,
        :class:`ServiceBusyError` when the queue is full or no slot frees within
        ``wait_timeout``, :class:`~bratseg.errors.ModelLoadError` when the model could not be
        loaded, and :class:`CaseProcessingError` for any other failure, naming the case.
        """
        segmenter = self.segmenter
        if getattr(self._local, "pending", False):
            self._local.pending = False  # this call takes over the reserved place
        else:
            self._admit()
        acquired = False
        try:
            acquired = self._slots.acquire(timeout=self.wait_timeout)  # None: wait as long as it takes
        finally:
            with self._count_lock:
                self._waiting -= 1
                if acquired:  # waiting -> running in one step: the admitted count never dips
                    self._active += 1
                    self.peak_concurrency = max(self.peak_concurrency, self._active)
        if not acquired:
            raise self._busy(f"{self.max_concurrent} predictions running")
        try:
            # Loading happens inside the slot too: the input volumes are most of the memory.
            t0 = time.perf_counter()
            # Under none the guards refuse raw input: they read the voxels and name the file.
            prediction = segment(case, preprocess, model=segmenter, log=progress, early_refusal=False)
            with self._count_lock:
                self._recent = [*self._recent[-(_RECENT - 1) :], time.perf_counter() - t0]
            return prediction
        except BratsegError:
            raise
        except MemoryError:
            raise CaseProcessingError(f"{_case_name(case)}: not enough memory to predict this case now") from None
        except Exception as exc:
            log.exception("prediction of %s failed", _case_name(case))
            raise CaseProcessingError(f"{_case_name(case)}: the prediction failed ({_one_line(exc)})") from exc
        finally:
            with self._count_lock:
                self._active -= 1
            self._slots.release()


def _case_name(case: Case | CaseVolumes | str | Path) -> str:
    if isinstance(case, (str, Path)):
        return Path(case).name
    return str(getattr(case, "case_id", "case"))


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split()) or "no details"
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
