"""The Hugging Face Hub, offline: load a model by its repo id, pin a revision, publish a folder.

No test reaches the real Hub. :class:`FakeHub` is a small threaded HTTP server, started by each
test that needs it, that answers the part of the Hub's HTTP API huggingface_hub uses: repo info,
file tree and file downloads; repo and branch creation, card validation, pre-upload and commit.
huggingface_hub's own code, pointed at it (``HF_ENDPOINT``, and its cache in a temporary
``HF_HOME``), writes the Hugging Face cache (blobs, refs, snapshots) exactly as it does from the
Hub, and sends an upload exactly as it would to the Hub; the server records every request and
keeps what was committed, so a published model can be loaded back by its id. Models are the
shipped model and a variant of it with a different head (other predictions), on a real case
cut to a few slices.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

import bratseg
from bratseg.errors import BratsegError, ModelLoadError
from bratseg.inference.predictor import SHIPPED_MODEL, weights_version
from bratseg.model.hub import DOWNLOAD_FILES, MODEL_FOLDER_FILES, stage_upload

REPO = "bratseg-test/brats-unet"
TOKEN = "hf_local_test_token"
RESOLVE = "/{repo_id}/resolve/{revision}/{filename}"  # huggingface_hub's download URL, after the endpoint
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Repo:
    """A repo of the fake Hub: commits (files by path) and refs (branch or tag -> commit)."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    private: bool = False
    gated: bool = False

    def commit(self, files: dict[str, bytes], ref: str = "main") -> str:
        oid = hashlib.sha1(json.dumps(sorted((p, hashlib.sha1(b).hexdigest()) for p, b in files.items())).encode())
        self.commits[oid.hexdigest()] = dict(files)
        self.refs[ref] = oid.hexdigest()
        return oid.hexdigest()

    def resolve(self, revision: str) -> str | None:
        return revision if revision in self.commits else self.refs.get(revision)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeHub:
    """The Hub's HTTP API, as much as huggingface_hub's download and upload need, on 127.0.0.1."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def do_HEAD(self) -> None:
                hub.handle(self, "HEAD")

            def do_GET(self) -> None:
                hub.handle(self, "GET")

            def do_POST(self) -> None:
                hub.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---------------------------------------------------------------- answering
    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "POST" else b""
        path = unquote(urlsplit(h.path).path)
        self.requests.append(Request(method, path, {k.lower(): v for k, v in h.headers.items()}, body))
        status, headers, payload = self.route(method, path, h.headers.get("Authorization"), body)
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(payload)

    def route(self, method: str, path: str, auth: str | None, body: bytes) -> tuple[int, dict, object]:
        parts = path.strip("/").split("/")
        if path == "/api/validate-yaml":
            return 200, {}, {"errors": [], "warnings": []}
        if path == "/api/repos/create":
            request = json.loads(body)
            repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
            private = bool(request.get("private")) or request.get("visibility") == "private"
            self.repos.setdefault(repo_id, Repo(private=private))
            return 200, {}, {"url": f"{self.url}/{repo_id}", "name": repo_id}
        if parts[:2] == ["api", "models"]:
            repo_id, action, rest = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
            return self.api(method, repo_id, action, rest, auth, body)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.download("/".join(parts[:2]), parts[3], "/".join(parts[4:]), auth)
        return 404, {}, b"not found"

    def access(self, repo_id: str, auth: str | None) -> tuple[int, dict, object] | Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and auth != f"Bearer {TOKEN}"):
            # As the Hub answers: the same for an unknown repo and a private one without access.
            return 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b"{}"
        return repo

    def api(self, method: str, repo_id: str, action: str, rest: str, auth: str | None, body: bytes):
        repo = self.access(repo_id, auth)
        if not isinstance(repo, Repo):
            return repo
        if action == "branch":
            repo.refs.setdefault(rest, repo.refs.get("main") or repo.commit({}))
            return 200, {}, {}
        if action == "preupload":
            files = json.loads(body)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return 200, {}, {"files": modes}
        if action == "commit":
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            files = dict(repo.commits.get(repo.refs.get(rest, ""), {}))
            for line in lines:
                if line["key"] == "file":
                    files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            oid = repo.commit(files, rest)
            return 200, {}, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid}
        commit = repo.resolve(rest.split("/")[0])
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": f"Invalid rev id: {rest}"}, b"{}"
        files = repo.commits[commit]
        if action == "revision":
            return 200, {}, {"id": repo_id, "sha": commit, "private": repo.private, "siblings": []}
        if action == "tree":
            tree = [
                {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                for p, b in files.items()
            ]
            return 200, {}, tree
        return 404, {}, b"not found"

    def download(self, repo_id: str, revision: str, filename: str, auth: str | None):
        repo = self.access(repo_id, auth)
        if not isinstance(repo, Repo):
            return repo
        if repo.gated:
            return 401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this model is restricted"}, b"{}"
        commit = repo.resolve(revision)
        if commit is None:
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b"{}"
        if filename not in repo.commits[commit]:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}, b"{}"
        data = repo.commits[commit][filename]
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}, data

    def repo_requests(self, name: str) -> list[Request]:
        """The requests about the repo ``bratseg-test/<name>`` (or creating it)."""
        found = [r for r in self.requests if f"bratseg-test/{name}/" in r.path or r.path == "/api/repos/create"]
        assert found, f"no request about bratseg-test/{name}"
        return found

    def downloaded(self) -> set[str]:
        """Files the clients fetched (GET of /resolve/), by name."""
        return {r.path.split("/resolve/")[1].split("/", 1)[1] for r in self.requests if "/resolve/" in r.path}


def folder_files(folder: Path, names=MODEL_FOLDER_FILES) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    """The shipped model with a shifted output bias: a different model, other predictions."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("other_model") / "model"
    shutil.copytree(SHIPPED_MODEL, folder)
    weights = load_file(str(folder / "model.safetensors"))
    bias = next(k for k in weights if k.startswith("segmentation_head") and k.endswith("bias"))
    weights[bias] = weights[bias] + 1.5
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def case(brats18_case: Path, tmp_path_factory) -> Path:
    """A real case cut to 16 slices through its tumour (and 4 empty ones each side): quick to
    predict, and a real scan for the input checks."""
    from serving_cases import crop_case

    out = tmp_path_factory.mktemp("hub_case")
    crop_case(brats18_case, out, slices=16)
    return out / brats18_case.name


@contextmanager
def serving_fake_hub(home: Path, monkeypatch) -> Iterator[FakeHub]:
    """A running FakeHub; huggingface_hub pointed at it, with its cache and token file under
    ``home`` (what HF_ENDPOINT and HF_HOME do when set before it is imported)."""
    from huggingface_hub import constants

    hub = FakeHub()
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + RESOLVE)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield hub
    finally:
        hub.close()


@pytest.fixture(scope="module")
def shipped_labels(case: Path) -> np.ndarray:
    """The shipped model's prediction of ``case`` (fp32), loaded from its folder."""
    labels = bratseg.from_pretrained(precision="fp32").predict(case)
    assert len(np.unique(labels)) >= 3, "one label only: comparisons with it would be vacuous"
    return labels


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch) -> Iterator[FakeHub]:
    """:func:`serving_fake_hub` with its Hugging Face home in ``tmp_path/hf``."""
    with serving_fake_hub(tmp_path / "hf", monkeypatch) as hub:
        yield hub


@pytest.fixture
def published(fake_hub: FakeHub, other_model: Path) -> dict[str, str]:
    """REPO on the fake Hub: tag v1 is the shipped model, main the other model (and files a
    model folder does not need, which must never be fetched)."""
    repo = fake_hub.repos.setdefault(REPO, Repo())
    extras = {"evil.py": b"raise SystemExit('executed')\n", "pytorch_model.bin": b"pickle"}
    v1 = repo.commit({**folder_files(SHIPPED_MODEL, DOWNLOAD_FILES), **extras}, "v1")
    main = repo.commit({**folder_files(other_model, DOWNLOAD_FILES), **extras}, "main")
    return {"v1": v1, "main": main}


# ------------------------------------------------------------------------------- loading


def test_shipped_model_never_touches_the_network(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained() opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    segmenter = bratseg.from_pretrained()
    assert segmenter.model_dir == SHIPPED_MODEL and segmenter.source == str(SHIPPED_MODEL)


def test_load_by_id_equals_the_folder_and_revisions_pin(fake_hub, published, other_model, case, shipped_labels):
    main = bratseg.from_pretrained(REPO, precision="fp32")
    cache = main.model_dir.parent
    # The Hugging Face cache layout: snapshots/<commit>, refs/main, blobs.
    assert main.model_dir.name == published["main"] and cache.name == "snapshots"
    assert (cache.parent / "refs" / "main").read_text() == published["main"]
    assert (cache.parent / "blobs").is_dir() and main.source == f"{REPO}@{published['main']}"
    # Only the model folder's files were fetched: no code, no pickle.
    assert fake_hub.downloaded() == set(DOWNLOAD_FILES)
    assert {p.name for p in main.model_dir.iterdir()} == set(DOWNLOAD_FILES)

    expected = bratseg.from_pretrained(other_model, precision="fp32").predict(case)
    assert (expected != shipped_labels).any(), "the two models agree: the pinning test would be vacuous"
    np.testing.assert_array_equal(main.predict(case), expected)
    shipped_version = weights_version(SHIPPED_MODEL)
    assert main.model_version != shipped_version
    for pinned in (
        bratseg.from_pretrained(REPO, revision="v1"),  # a tag
        bratseg.from_pretrained(REPO, revision=published["v1"]),  # a commit
        bratseg.from_pretrained(f"{REPO}@v1"),  # the CLI's form (its predictions: the CLI test)
    ):
        assert pinned.model_dir.name == published["v1"] and pinned.model_version == shipped_version


def test_offline_reads_the_cache_and_says_how_to_download(fake_hub, published, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(ModelLoadError, match=r"local_files_only=True.*hf download bratseg-test/brats-unet") as err:
        bratseg.from_pretrained(REPO, local_files_only=True)
    assert "\n" not in str(err.value) and str(err.value).startswith(REPO)
    bratseg.from_pretrained(REPO, revision="v1")  # downloads v1 only
    asked = len(fake_hub.requests)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert bratseg.from_pretrained(REPO, revision="v1").model_dir.name == published["v1"]
    assert len(fake_hub.requests) == asked, "offline, yet the Hub was asked"
    with pytest.raises(ModelLoadError, match=rf"{REPO}@main: not in the Hugging Face cache .*HF_HUB_OFFLINE=1"):
        bratseg.from_pretrained(REPO, revision="main")  # main was never downloaded
    with pytest.raises(ModelLoadError, match=r"--revision v2"):
        bratseg.from_pretrained(REPO, revision="v2")


NOT_A_MODEL = (
    r"^bratseg-test/weights-only: not a bratseg model folder: the repo has no preprocessing\.json, bratseg\.json"
)


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        ("bratseg-test/no-such-model", {}, r"^bratseg-test/no-such-model: no such model repo .*a private one: log in"),
        (REPO, {"revision": "v9"}, rf"^{REPO}@v9: the Hub repo {REPO} has no revision 'v9'"),
        ("bratseg-test/private", {}, r"^bratseg-test/private: no such model repo .*private one: log in .*HF_TOKEN"),
        ("bratseg-test/private", {"token": "hf_wrong"}, r"^bratseg-test/private: .*the token cannot read"),
        ("bratseg-test/gated", {}, r"^bratseg-test/gated: a gated repo: accept its conditions"),
        ("bratseg-test/weights-only", {}, NOT_A_MODEL),
        ("bratseg-test/a--b", {}, r"^bratseg-test/a--b: model folder not found"),
    ],
)
def test_every_failure_is_one_line_naming_the_id(fake_hub, published, model, kwargs, message):
    shipped = folder_files(SHIPPED_MODEL)
    fake_hub.repos["bratseg-test/private"] = Repo(private=True)
    fake_hub.repos["bratseg-test/private"].commit(shipped)
    fake_hub.repos["bratseg-test/gated"] = Repo(gated=True)
    fake_hub.repos["bratseg-test/gated"].commit(shipped)
    fake_hub.repos["bratseg-test/weights-only"] = Repo()
    fake_hub.repos["bratseg-test/weights-only"].commit({k: shipped[k] for k in ("config.json", "model.safetensors")})
    with pytest.raises(ModelLoadError, match=message) as err:
        bratseg.from_pretrained(model, **kwargs)
    assert "\n" not in str(err.value)


def test_a_private_repo_loads_with_its_token(fake_hub, published):
    repo = fake_hub.repos["bratseg-test/private"] = Repo(private=True)
    commit = repo.commit(folder_files(SHIPPED_MODEL))
    assert bratseg.from_pretrained("bratseg-test/private", token=TOKEN).model_dir.name == commit
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in fake_hub.repo_requests("private"))


def test_an_unreachable_hub_is_one_line(fake_hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    closed = FakeHub()
    closed.close()  # nothing listens on its port now
    monkeypatch.setattr(constants, "ENDPOINT", closed.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed.url + RESOLVE)
    with pytest.raises(ModelLoadError, match=rf"^{REPO}: not in the Hugging Face cache .* cannot be reached") as err:
        bratseg.from_pretrained(REPO, cache_dir=tmp_path / "elsewhere")
    assert "\n" not in str(err.value) and str(tmp_path / "elsewhere") in str(err.value)


def test_cli_names_the_id_in_one_line_and_reads_HF_HOME(fake_hub, published, case, shipped_labels, tmp_path, capsys):
    """Through ``bratseg predict``: an id that fails is exit code 2 and one line; then a fresh
    process with only HF_HOME and HF_HUB_OFFLINE=1 set finds the cached model by its id."""
    from bratseg.cli import main

    out = tmp_path / "seg.nii.gz"
    assert main(["predict", str(case), "--output", str(out), "--model", "bratseg-test/nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bratseg predict: error: bratseg-test/nope: no such model repo") and "\n" not in err
    # The other commands that name a model resolve an id the same way.
    for command in (
        ["report", str(case), "--out", str(tmp_path / "r.pdf"), "--model", "bratseg-test/nope"],
        ["train", "--cache", str(tmp_path), "--out", str(tmp_path / "run"), "--init-weights", "bratseg-test/nope"],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"bratseg {command[0]}: error: bratseg-test/nope: no such model repo") and "\n" not in err

    bratseg.from_pretrained(REPO, revision="v1")  # fills tmp_path/hf/hub, where HF_HOME=tmp_path/hf looks
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "bratseg", "predict", str(case), "--output", str(out), "--precision", "fp32"]
    done = subprocess.run([*command, "--model", f"{REPO}@v1"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import nibabel as nib

    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), shipped_labels)
    done = subprocess.run([*command, "--model", f"{REPO}@main"], env=env, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"bratseg predict: error: {REPO}@main: not in the Hugging Face cache")


def test_serve_loads_an_id_in_the_background(fake_hub, published):
    from bratseg.cli import build_parser
    from bratseg.serving.service import InferenceService

    args = build_parser().parse_args(["serve", "--model", f"{REPO}@v1"])
    service = InferenceService(args.model, background=True)  # what `bratseg serve` starts
    assert service.wait_ready(120) and service.segmenter.model_dir.name == published["v1"]
    failed = InferenceService(
        build_parser().parse_args(["serve", "--model", "bratseg-test/nope"]).model, background=True
    )
    assert not failed.wait_ready(120)  # /healthz then answers 503 with this error
    assert str(failed.error).startswith("bratseg-test/nope: no such model repo") and "\n" not in str(failed.error)


# ---------------------------------------------------------------------------- publishing


def test_the_staged_folder_and_its_card(tmp_path):
    from huggingface_hub import ModelCard

    staged = stage_upload(SHIPPED_MODEL, tmp_path / "upload")
    assert {p.name for p in staged.iterdir()} == set(DOWNLOAD_FILES)
    assert folder_files(staged) == folder_files(SHIPPED_MODEL)
    card = ModelCard.load(staged / "README.md")
    assert card.data.library_name == "segmentation-models-pytorch" and "research-only" in card.data.tags

    # The project's full card carries the Hub metadata of the generated template and its figures.
    full = ModelCard.load(Path(__file__).parents[2] / "model_card.md")
    staged = stage_upload(SHIPPED_MODEL, tmp_path / "full", card=Path(__file__).parents[2] / "model_card.md")
    assert ModelCard.load(staged / "README.md").data.to_dict() == full.data.to_dict()
    assert full.data.library_name == "segmentation-models-pytorch" and full.data.license == "mit"
    dice = {r.metric_name: r.metric_value for r in full.data.eval_results}
    assert dice["Dice WT (5-fold CV, mean of 27 cases)"] == 0.854

    bare = tmp_path / "bare"
    shutil.copytree(SHIPPED_MODEL, bare)
    (bare / "README.md").write_text("# no metadata\n")  # rebuilt from bratseg.json
    card = ModelCard.load(stage_upload(bare, tmp_path / "bare_upload") / "README.md")
    assert card.data.library_name == "segmentation-models-pytorch" and card.data.eval_results is None
    (tmp_path / "bad.md").write_text("---\nlicense: mit\n---\n# a card without library and tags\n")
    with pytest.raises(BratsegError, match=r"bad\.md: the model card's metadata lacks library_name, tags"):
        stage_upload(SHIPPED_MODEL, tmp_path / "bad", card=tmp_path / "bad.md")
    (bare / "bratseg.json").unlink()
    with pytest.raises(ModelLoadError, match="missing bratseg.json"):
        stage_upload(bare, tmp_path / "incomplete")


def test_push_to_hub_sends_the_folder_and_loads_back(fake_hub):
    """The upload goes to the local FakeHub (not the real Hub), which records the requests and
    keeps the commit; the model is then loaded back by its id from there."""
    segmenter = bratseg.from_pretrained()
    url = segmenter.push_to_hub(
        "bratseg-test/pushed", private=True, revision="exp", commit_message="first model", token=TOKEN
    )
    requests = fake_hub.requests
    create = next(r for r in requests if r.path == "/api/repos/create")
    assert json.loads(create.body)["visibility"] == "private" and json.loads(create.body)["name"] == "pushed"
    assert fake_hub.repos["bratseg-test/pushed"].private
    assert any(r.path == "/api/models/bratseg-test/pushed/branch/exp" for r in requests)
    assert any(r.path == "/api/validate-yaml" for r in requests)  # the Hub validates the card
    commit = next(r for r in requests if r.path == "/api/models/bratseg-test/pushed/commit/exp")
    lines = [json.loads(line) for line in commit.body.decode().splitlines()]
    assert lines[0]["value"]["summary"] == "first model"
    sent = {line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines[1:]}
    assert set(sent) == set(DOWNLOAD_FILES)
    assert {k: sent[k] for k in MODEL_FOLDER_FILES} == folder_files(SHIPPED_MODEL)
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in fake_hub.repo_requests("pushed"))
    assert url.startswith(f"{fake_hub.url}/bratseg-test/pushed/commit/")

    loaded = bratseg.from_pretrained("bratseg-test/pushed", revision="exp", token=TOKEN)
    assert loaded.model_dir.name == url.rsplit("/", 1)[1] and loaded.model_version == segmenter.model_version
    assert folder_files(loaded.model_dir) == folder_files(SHIPPED_MODEL)


def test_push_refuses_a_bad_id_and_reports_a_refusal_in_one_line(fake_hub):
    segmenter = bratseg.from_pretrained()
    with pytest.raises(BratsegError, match="not a Hub repo id"):
        segmenter.push_to_hub("no-namespace")
    fake_hub.repos["bratseg-test/theirs"] = Repo(private=True)  # exists, and this token cannot write it
    with pytest.raises(BratsegError, match=r"^bratseg-test/theirs: the Hub refused the upload, HTTP 401 \(log") as err:
        segmenter.push_to_hub("bratseg-test/theirs")
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------ the Space


def load_app_module(monkeypatch):
    """``app.py`` imported as a module (it sets two environment defaults on import; pre-set
    here so that os.environ is restored afterwards)."""
    import importlib.util

    for var, value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
        monkeypatch.setenv(var, os.environ.get(var, value))
    spec = importlib.util.spec_from_file_location("bratseg_space_app", Path(__file__).parents[2] / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_app_serves_where_a_space_says_and_takes_a_hub_id(monkeypatch):
    app = load_app_module(monkeypatch)
    for var in (*app.HOST_VARIABLES, *app.PORT_VARIABLES, "BRATSEG_MODEL"):
        monkeypatch.delenv(var, raising=False)
    # What a Gradio Space sets, then a Space variable naming the model.
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("PORT", "7861")
    monkeypatch.setenv("BRATSEG_MODEL", "some-org/brats-unet@v1")
    args = app.parse_args([])
    assert (args.host, args.port, str(args.model)) == ("0.0.0.0", 7861, "some-org/brats-unet@v1")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7862")  # Gradio's own variable comes before PORT
    monkeypatch.setenv("BRATSEG_HOST", "127.0.0.3")  # bratseg's come first, then the flags
    args = app.parse_args([])
    assert (args.host, args.port) == ("127.0.0.3", 7862)
    assert app.parse_args(["--port", "9000", "--model", "other/model"]).port == 9000


def test_app_refuses_an_uncached_id_offline_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "BRATSEG_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", GRADIO_TEMP_DIR=str(tmp_path / "gradio"))
    app = Path(__file__).parents[2] / "app.py"
    done = subprocess.run(
        [sys.executable, str(app), "--model", "some-org/brats-unet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert lines == [lines[0]] and lines[0].startswith(
        "app.py: error: cannot load the model: some-org/brats-unet: not in the Hugging Face cache"
    )
