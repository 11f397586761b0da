"""The inference service and the Flask app under load: a full queue refuses at once, an
unforeseen failure is a typed error naming the case, and on a real waitress server health
checks and static files keep answering within a second during a burst of predictions, the
burst beyond the bounded queue being turned away with 503 and ``Retry-After``.

The shipped model predicts a real BraTS case cut by the test to the slab around its
tumour (a few seconds each), so that the slots are really held while the burst arrives.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serving_cases import crop_case

from bratseg.serving.flask_app import create_app
from bratseg.serving.server import RESERVED_THREADS, serve_plan
from bratseg.serving.service import InferenceService, ServiceBusyError

httpx = pytest.importorskip("httpx")
waitress = pytest.importorskip("waitress")

BURST = 12
HEALTH_LIMIT_S = 1.0


def test_serve_plan_keeps_threads_free_for_health_checks():
    assert RESERVED_THREADS >= 1
    assert serve_plan(8, 2) == (8, 8 - 2 - RESERVED_THREADS)  # the queue is what the threads leave
    threads, queue = serve_plan(4, 2)
    assert threads - 2 - queue >= RESERVED_THREADS
    threads, queue = serve_plan(1, 3)  # too few threads: raised so that some stay free
    assert queue == 0 and threads == 3 + RESERVED_THREADS
    assert serve_plan(4, 2, max_queue=5) == (2 + 5 + RESERVED_THREADS, 5)


@pytest.fixture(scope="module")
def segmenter(one_torch_thread):
    return InferenceService().segmenter  # the shipped model, loaded once for the module


def test_a_full_queue_refuses_at_once(segmenter, brats18_case, tmp_path):
    """No slot and no room to wait: refused in milliseconds, with a retry estimate."""
    files = crop_case(brats18_case, tmp_path, slices=24, modalities=("flair", "t1ce"))
    from bratseg.data.layout import Case

    service = InferenceService(max_concurrent=1, max_waiting=0, segmenter=segmenter)
    case = Case.from_files(**files)
    holder = threading.Thread(target=service.segment, args=(case,))
    holder.start()
    try:
        deadline = time.monotonic() + 60
        while service.active == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.active == 1
        t0 = time.perf_counter()
        with pytest.raises(ServiceBusyError, match="busy") as err:
            service.segment(case)
        assert time.perf_counter() - t0 < 0.5
        assert err.value.retry_after >= 1
    finally:
        holder.join(120)
    assert service.active == 0 and service.waiting == 0


def test_an_unforeseen_failure_is_a_typed_error_naming_the_case(segmenter):
    """Volumes that bypassed the loader's checks (modalities of two shapes) fail inside the
    model's path: the caller gets a CaseProcessingError naming the case, and the slot is free."""
    import nibabel as nib
    import numpy as np

    from bratseg.data.io import CaseVolumes
    from bratseg.serving.service import CaseProcessingError

    service = InferenceService(max_concurrent=1, segmenter=segmenter)
    brain = np.zeros((240, 240, 155), np.float32)
    brain[60:180, 50:190, 30:120] = np.random.default_rng(0).uniform(100, 200, (120, 140, 90))
    broken = CaseVolumes("BROKEN_CASE", {"flair": brain, "t1ce": brain[:200]}, np.eye(4), nib.Nifti1Header())
    with pytest.raises(CaseProcessingError, match=r"^BROKEN_CASE: the prediction failed \(ValueError: "):
        service.segment(broken)
    assert service.active == 0 and service.waiting == 0


@pytest.mark.slow
def test_health_and_static_answer_within_a_second_during_a_burst(segmenter, brats18_case, tmp_path):
    files = crop_case(brats18_case, tmp_path, slices=32, modalities=("flair", "t1ce"))
    upload = {m: (p.name, p.read_bytes()) for m, p in files.items()}
    threads, queue = serve_plan(threads=4, max_concurrent=1)
    assert queue == 1
    service = InferenceService(max_concurrent=1, max_waiting=queue, segmenter=segmenter)
    server = waitress.create_server(create_app(service), host="127.0.0.1", port=0, threads=threads)
    closing = threading.Event()

    def run() -> None:
        try:
            server.run()
        except OSError:  # select() on the socket close() just shut: the end, not an error
            if not closing.is_set():
                raise

    serving = threading.Thread(target=run, daemon=True)
    serving.start()
    url = f"http://127.0.0.1:{server.effective_port}"
    latencies: dict[str, list[float]] = {"/healthz": [], "/static/style.css": []}
    statuses: set[int] = set()
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                for route, seen in latencies.items():
                    t0 = time.perf_counter()
                    statuses.add(client.get(url + route).status_code)
                    seen.append(time.perf_counter() - t0)
                time.sleep(0.1)

    def predict(_: int) -> httpx.Response:
        return httpx.post(f"{url}/api/predict", files=upload, timeout=300)

    prober = threading.Thread(target=probe)
    try:
        prober.start()
        with ThreadPoolExecutor(BURST) as pool:
            answers = list(pool.map(predict, range(BURST)))
        done.set()
        prober.join(30)
        after = httpx.get(f"{url}/healthz", timeout=10).json()
    finally:
        done.set()
        closing.set()
        server.close()
        serving.join(10)

    ok = [a for a in answers if a.status_code == 200]
    busy = [a for a in answers if a.status_code == 503]
    assert len(ok) + len(busy) == BURST, [a.status_code for a in answers]
    # One ran, one waited its turn; the rest were turned away (a late arrival may find room).
    assert 2 <= len(ok) < BURST and len(busy) >= BURST - 4
    assert all(a.json()["case"] == brats18_case.name for a in ok)
    for answer in busy:
        assert int(answer.headers["Retry-After"]) >= 1
        assert "busy" in answer.json()["error"]
    assert service.peak_concurrency == 1
    assert statuses == {200}
    for route, seen in latencies.items():
        assert len(seen) >= 5, route
        assert max(seen) < HEALTH_LIMIT_S, (route, sorted(seen)[-3:])
    assert after["active"] == 0 and after["waiting"] == 0
