"""``bratseg predict --server URL`` against a real waitress server running the shipped model.

The label map the server returns is the one a local prediction of the same files gives; the
command that fetches it loads no torch (what makes a call cheap); an unreachable server and a
case the server refuses are typed one-line errors naming the server, and write nothing.
The case is a real BraTS case cut to the slab around its tumour, so a prediction takes seconds.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from serving_cases import crop_case

from bratseg.data.layout import case_from_folder
from bratseg.serving.client import ServerError, predict_remote
from bratseg.serving.flask_app import create_app
from bratseg.serving.service import InferenceService

waitress = pytest.importorskip("waitress")


@pytest.fixture(scope="module")
def case(brats18_case: Path, tmp_path_factory) -> Path:
    files = crop_case(brats18_case, tmp_path_factory.mktemp("client"), slices=32)
    return next(iter(files.values())).parent


@pytest.fixture(scope="module")
def server(one_torch_thread):
    service = InferenceService(max_concurrent=1, max_waiting=1)
    server = waitress.create_server(create_app(service), host="127.0.0.1", port=0, threads=4)
    closing = threading.Event()

    def run() -> None:
        try:
            server.run()
        except OSError:  # the socket close() just shut: the end, not an error
            if not closing.is_set():
                raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}", service
    closing.set()
    server.close()
    thread.join(10)


def test_the_server_returns_the_local_prediction(server, case: Path, tmp_path: Path):
    url, service = server
    result = predict_remote(url, case, tmp_path / "remote.nii.gz")
    remote = nib.load(str(result.output))
    local = service.segmenter.segment(case_from_folder(case))
    assert np.array_equal(np.asanyarray(remote.dataobj), local.labels)
    assert np.allclose(remote.affine, local.volumes.affine)
    assert local.labels.any(), "the slab holds tumour: an empty map would prove nothing"
    assert result.volumes["whole tumour"] == pytest.approx(local.region_volumes()["whole tumour"], abs=0.01)
    # The client asks for no PDF (the web pages' extra): the answer links none.
    assert result.answer["report_url"] is None and result.answer["uncertainty_url"]


def test_the_command_writes_the_label_map_without_loading_torch(server, case: Path, tmp_path: Path):
    url, _ = server
    out = tmp_path / "cli.nii.gz"
    script = (
        "import sys; from bratseg.cli import main; "
        f"rc = main(['predict', {str(case)!r}, '--output', {str(out)!r}, '--server', {url!r}]); "
        "print('torch loaded' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no torch" in done.stdout
    assert "whole tumour" in done.stdout  # the volumes are printed as a local call prints them
    reference = predict_remote(url, case, tmp_path / "api.nii.gz").output
    assert np.array_equal(nib.load(str(out)).get_fdata(), nib.load(str(reference)).get_fdata())


def test_an_unreachable_server_is_a_typed_error(case: Path, tmp_path: Path, capsys):
    from bratseg.cli import main

    with pytest.raises(ServerError, match="127.0.0.1:9: no bratseg server answers"):
        predict_remote("http://127.0.0.1:9", case, tmp_path / "x.nii.gz")
    assert main(["predict", str(case), "--output", str(tmp_path / "y.nii.gz"), "--server", "http://127.0.0.1:9"]) == 2
    assert "no bratseg server answers" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    # Options that would change the model or its settings cannot be sent: refused, not ignored.
    assert main(["predict", str(case), "--output", str(tmp_path / "z.nii.gz"), "--server", "http://x", "--tta"]) == 2
    assert "--tta: not with --server" in capsys.readouterr().err


def test_a_refused_case_carries_the_servers_reason(server, case: Path, tmp_path: Path):
    url, _ = server
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in case.iterdir():
        data = path.read_bytes()
        (broken / path.name).write_bytes(data[: len(data) // 3] if "flair" in path.name else data)
    with pytest.raises(ServerError, match="flair.*(truncated|corrupt)"):
        predict_remote(url, broken, tmp_path / "out.nii.gz")
    assert not (tmp_path / "out.nii.gz").exists()
