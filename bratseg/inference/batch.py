"""Predict many cases with reading, the network and writing overlapped.

Three stages run at once, in case order:

1. **read**: a reader thread loads and decompresses the next case and prepares the network's
   input (:meth:`Segmenter.prepare`). It starts before the model is loaded, so a single case's
   reading overlaps the model's start-up;
2. **network**: ``network_workers`` threads each run the network on one case
   (:meth:`Segmenter.run_network`), splitting torch's intra-op threads between them. On the
   CPU the default is two workers of half the threads each: a network on one thread never
   waits at a parallel region's barrier for a core the reader or the writer holds, which made
   a batch of real cases 1.16x faster on two cores (BENCHMARKS.md), with identical results;
3. **write**: a writer thread turns each network output into labels
   (:meth:`Segmenter.finish`), writes them and runs the per-case hooks, in job order.

At most ``max_in_flight`` cases (default 3: as many as the stages hold; a fourth made no
difference) are in memory at any time, so memory stays bounded whatever the number of cases. A
case that fails in any stage is reported in its :class:`Outcome` and does not stop the others.

Example:
    >>> import tempfile, pathlib
    >>> from bratseg.synthetic import write_synthetic_dataset
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> cases = write_synthetic_dataset(root / "in", 2, shape=(64, 64, 24))
    >>> jobs = [Job(c.case_id, c.folder, root / "out" / f"{c.case_id}.nii.gz") for c in cases]
    >>> import bratseg
    >>> outcomes = run_batch(jobs, bratseg.from_pretrained, write=lambda job, pred: pred.save(job.target))
    >>> [o.ok for o in outcomes]
    [True, True]
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from bratseg.data.io import CaseVolumes
    from bratseg.data.layout import Case
    from bratseg.inference.predictor import Prediction, Segmenter

DEFAULT_MAX_IN_FLIGHT = 3
_DONE = object()


@dataclass
class Job:
    """One case to predict: its name, its source (a case folder or a :class:`Case` of explicit
    files) and where its label map goes."""

    name: str
    source: Case | Path
    target: Path


@dataclass
class Outcome:
    """What became of a job: its prediction, or the error that stopped it, and the wall time
    from the start of its reading to the end of its writing."""

    job: Job
    prediction: Prediction | None = None
    error: BaseException | None = None
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def read_case(job: Job) -> CaseVolumes:
    """The default reader: the case's images, loaded and validated (no label map)."""
    from bratseg.data.io import load_case
    from bratseg.data.layout import Case, case_from_folder

    case = job.source if isinstance(job.source, Case) else case_from_folder(job.source)
    return load_case(case, with_label=False)


@dataclass
class _Item:
    index: int
    job: Job
    started: float
    prepared: object = None
    network: object = None
    error: BaseException | None = None


def run_batch(
    jobs: Iterable[Job],
    segmenter: Segmenter | Callable[[], Segmenter],
    write: Callable[[Job, Prediction], None],
    on_outcome: Callable[[Outcome], None] | None = None,
    read: Callable[[Job], CaseVolumes] = read_case,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    keep_predictions: bool = False,
    network_workers: int | None = None,
) -> list[Outcome]:
    """Predict every job, in order, with the three stages overlapped (module docstring).

    Args:
        jobs: the cases, in the order they are read and reported.
        segmenter: a :class:`Segmenter`, or a function that loads one: it is called on this
            thread after the reader has started, so that loading overlaps the first read. An
            error it raises stops the run and is raised here.
        write: writes a finished prediction (the label map, and anything else per case); an
            error it raises fails that case only.
        on_outcome: called on the writer thread with each outcome, in job order, while its
            prediction is still attached (progress lines, a progress bar).
        read: loads a job's volumes (default :func:`read_case`).
        max_in_flight: cases in memory at once (at least 1; 3 lets every stage work).
        keep_predictions: keep each prediction in its outcome; by default it is dropped once
            written, so that memory does not grow with the number of cases.
        network_workers: cases in the network at once, torch's intra-op threads shared
            between them (never more workers than threads or cases); None: 2 on the CPU
            with two threads or more (:func:`default_network_workers`), 1 on a GPU.
    """
    pipeline = _Pipeline(list(jobs), write, on_outcome, read, max_in_flight, keep_predictions, network_workers)
    threads = [
        threading.Thread(target=f, name=f"bratseg-{name}", daemon=True)
        for name, f in (("reader", pipeline.reader), ("writer", pipeline.writer))
    ]
    for t in threads:
        t.start()
    try:
        pipeline.network(segmenter)
    except BaseException:
        pipeline.abort()
        raise
    pipeline.to_writer.put(_DONE)
    for t in threads:
        t.join()
    return pipeline.outcomes


def default_network_workers(device: torch.device, threads: int) -> int:
    """Cases in the network at once by default: 2 on the CPU with at least two threads, else 1.

    Example:
        >>> import torch
        >>> default_network_workers(torch.device("cpu"), 2), default_network_workers(torch.device("cpu"), 1)
        (2, 1)
    """
    return 2 if device.type == "cpu" and threads >= 2 else 1


class _Pipeline:
    """The three stages of :func:`run_batch` and the queues between them."""

    def __init__(
        self,
        jobs: list[Job],
        write: Callable[[Job, Prediction], None],
        on_outcome: Callable[[Outcome], None] | None,
        read: Callable[[Job], CaseVolumes],
        max_in_flight: int,
        keep_predictions: bool,
        network_workers: int | None,
    ) -> None:
        self.jobs, self.write, self.on_outcome, self.read = jobs, write, on_outcome, read
        self.keep_predictions = keep_predictions
        self.network_workers = network_workers
        self.slots = threading.Semaphore(max(1, max_in_flight))
        self.ready = threading.Event()  # the model is loaded
        self.stop = threading.Event()
        self.loaded: list[Segmenter] = []
        self.to_network: queue.Queue = queue.Queue()
        self.to_writer: queue.Queue = queue.Queue()
        self.outcomes: list[Outcome] = []

    def reader(self) -> None:
        for index, job in enumerate(self.jobs):
            self.slots.acquire()
            item = _Item(index, job, time.perf_counter())
            try:
                volumes = self.read(job)
                self.ready.wait()
                if self.stop.is_set():
                    return
                item.prepared = self.loaded[0].prepare(volumes)
            except Exception as exc:  # reported per case: one bad case must not stop the rest
                item.error = exc
            if self.stop.is_set():
                return
            self.to_network.put(item)
        self.to_network.put(_DONE)

    def network(self, segmenter: Segmenter | Callable[[], Segmenter]) -> None:
        """Load the model (if given a loader) on this thread, then run the network on each
        case: this thread is one of the workers."""
        import torch

        model = segmenter if hasattr(segmenter, "run_network") else segmenter()
        self.loaded.append(model)
        self.ready.set()
        threads = torch.get_num_threads()
        workers = self.network_workers or default_network_workers(model.device, threads)
        workers = max(1, min(workers, threads, len(self.jobs)))  # one case: one worker, every thread
        others = [
            threading.Thread(target=self._network_worker, name="bratseg-network", daemon=True)
            for _ in range(workers - 1)
        ]
        torch.set_num_threads(max(1, threads // workers))  # process-wide: every worker's share
        try:
            for t in others:
                t.start()
            self._network_worker()
            for t in others:
                t.join()
        finally:
            torch.set_num_threads(threads)

    def _network_worker(self) -> None:
        while (item := self.to_network.get()) is not _DONE:
            if item.error is None:
                try:
                    item.network = self.loaded[0].run_network(item.prepared)
                    item.prepared.slices = None  # the network input is no longer needed
                except Exception as exc:
                    item.error = exc
            self.to_writer.put(item)
        self.to_network.put(_DONE)  # for the other workers

    def writer(self) -> None:
        """Finish and write the cases in job order (the network workers may finish them out
        of order)."""
        waiting: dict[int, _Item] = {}
        next_index = 0
        while (item := self.to_writer.get()) is not _DONE:
            waiting[item.index] = item
            while next_index in waiting:
                self._finish(waiting.pop(next_index))
                next_index += 1

    def _finish(self, item: _Item) -> None:
        outcome = Outcome(item.job, error=item.error)
        if item.error is None:
            try:
                outcome.prediction = self.loaded[0].finish(item.prepared, item.network)
                item.prepared = item.network = None  # free the case's arrays early
                self.write(item.job, outcome.prediction)
            except Exception as exc:
                outcome.error = exc
        outcome.wall_seconds = time.perf_counter() - item.started
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        if not self.keep_predictions:
            outcome.prediction = None
        self.outcomes.append(outcome)
        self.slots.release()

    def abort(self) -> None:
        """Model load failed or the run was interrupted: stop the reader (it may wait on the
        model or on a slot) and the writer; the daemon threads end with the process."""
        self.stop.set()
        self.ready.set()
        self.slots.release()
        self.to_writer.put(_DONE)
