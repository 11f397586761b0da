"""A client of a running ``bratseg serve``: ``bratseg predict CASE --output OUT --server URL``.

A command-line call that loads torch and the model pays several seconds before its first
voxel; a server has paid them once. This client sends the case's files to the server's
``POST /api/predict`` and writes the label map it returns, so a call costs the upload, the
prediction and the download. It imports neither torch nor the model: the label map is the
server's model's, exactly as ``bratseg predict`` on that machine would write it.

Example:
    >>> remote_files(Path("no/such/case"))
    Traceback (most recent call last):
        ...
    bratseg.errors.InvalidCaseError: case: not found
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from bratseg.data.io import atomic_write_bytes
from bratseg.data.layout import case_from_folder
from bratseg.errors import BratsegError, InvalidCaseError

DEFAULT_TIMEOUT_S = 600.0  # a native case on a busy server takes a minute or two


class ServerError(BratsegError):
    """The server could not be reached, or answered with an error (its message is kept)."""


@dataclass
class RemoteResult:
    """What the server said about a case: its JSON answer and where the label map went."""

    output: Path
    answer: dict[str, Any]

    @property
    def volumes(self) -> dict[str, float]:
        return dict(self.answer.get("volumes_cm3", {}))

    @property
    def warnings(self) -> list[str]:
        return list(self.answer.get("warnings", []))


def remote_files(source: Path) -> dict[str, tuple[str, bytes]]:
    """The multipart fields for ``source``: a zip file as is (a case folder or DICOM study), a
    folder holding DICOM zipped in memory, or a NIfTI case folder's sequences by name."""
    source = Path(source)
    if not source.exists():
        raise InvalidCaseError(source, "not found")
    if source.is_file():
        if source.suffix.lower() != ".zip":
            raise InvalidCaseError(source, "give a case folder or a .zip of one (or of a DICOM study)")
        return {"zip": (source.name, source.read_bytes())}
    if not any(p.name.lower().endswith((".nii", ".nii.gz")) for p in source.iterdir()):
        return {"zip": (f"{source.name}.zip", _zipped(source))}  # a DICOM study folder
    case = case_from_folder(source)
    case.check_required()
    return {modality: (path.name, path.read_bytes()) for modality, path in case.images.items()}


def predict_remote(
    server: str,
    source: str | Path,
    output: str | Path,
    preprocess: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> RemoteResult:
    """Segment ``source`` on the ``bratseg serve`` at ``server`` and write its label map to
    ``output`` (atomically). Raises :class:`ServerError` naming the server for a refused
    connection, a timeout or an error answer (an invalid case's message included)."""
    import httpx  # only here: the module stays importable without a network stack loaded

    base = server if server.endswith("/") else server + "/"
    files = remote_files(Path(source))
    data = {"report": "false"}  # the PDF is the web pages' extra: a second and a half saved
    if preprocess is not None:
        data["preprocess"] = preprocess
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            response = client.post(urljoin(base, "api/predict"), files=files, data=data)
            answer = _answer(server, response)
            labels = client.get(urljoin(base, answer["labels_url"].lstrip("/")))
            if labels.status_code != 200:
                raise ServerError(f"{server}: the label map could not be fetched (HTTP {labels.status_code})")
    except httpx.TimeoutException:
        raise ServerError(f"{server}: no answer within {timeout:.0f} s") from None
    except httpx.HTTPError as exc:
        raise ServerError(f"{server}: no bratseg server answers ({' '.join(str(exc).split())})") from None
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output, lambda tmp: tmp.write_bytes(labels.content))
    return RemoteResult(output, answer)


def _answer(server: str, response: Any) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200 or not isinstance(answer, dict) or "labels_url" not in answer:
        message = answer.get("error") if isinstance(answer, dict) else None
        raise ServerError(f"{server}: {message or f'HTTP {response.status_code}, not a bratseg answer'}")
    return answer


def _zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # DICOM barely compresses
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()
