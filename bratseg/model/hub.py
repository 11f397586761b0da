"""Models on the Hugging Face Hub: name a published model by its repo id, publish a model folder.

A model is named by a local folder (``bratseg export``'s output) or by a Hub repo id
``namespace/name``, optionally ``namespace/name@revision``. An id is resolved with
``huggingface_hub.snapshot_download`` into the standard Hugging Face cache (``HF_HOME``,
``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` reads the cache only), fetching only the files a model
folder holds (:data:`DOWNLOAD_FILES`: safetensors weights, JSON and the card; nothing that
could run code). Every failure is one :class:`~bratseg.errors.ModelLoadError` line that names
the id. Publishing (:func:`push_model_folder`) creates the repo and uploads the folder with a
model card (:mod:`bratseg.model.card`).

This module imports huggingface_hub only when an id is resolved or a folder published, so
naming a local folder (or the shipped model) never touches it or the network.

Example:
    >>> from bratseg.model.hub import is_hub_id, split_revision
    >>> is_hub_id("some-org/brats-unet"), is_hub_id("./my-model"), is_hub_id("runs/r1/model")
    (True, False, False)
    >>> split_revision("some-org/brats-unet@v1.0")
    ('some-org/brats-unet', 'v1.0')
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from bratseg.errors import BratsegError, ModelLoadError

# What a model folder needs, and what is fetched of a Hub repo (the card too, nothing else).
MODEL_FOLDER_FILES = ("config.json", "model.safetensors", "preprocessing.json", "bratseg.json")
CARD_FILE = "README.md"
DOWNLOAD_FILES = (*MODEL_FOLDER_FILES, CARD_FILE)
DEFAULT_COMMIT_MESSAGE = "Upload bratseg model"
# namespace/name as the Hub allows them (letters, digits, '-', '_', '.'; at most 96 characters),
# with an optional @revision (a branch, tag or commit).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}(@[^\s@]+)?$")


def split_revision(model: str) -> tuple[str, str | None]:
    """``("namespace/name", "revision")`` of ``namespace/name@revision`` (revision None without ``@``)."""
    repo_id, _, revision = str(model).partition("@")
    return repo_id, revision or None


def is_hub_id(model: str | Path) -> bool:
    """True when ``model`` names a Hub repo rather than a local folder: ``namespace/name`` (or
    ``namespace/name@revision``) that is not an existing path. Anything else, even a missing
    folder, is a local path (so a mistyped folder gets "model folder not found")."""
    text = str(model)
    if Path(text).expanduser().exists() or not _HUB_ID.match(text):
        return False
    return ".." not in text and "--" not in split_revision(text)[0]


def resolve_model(
    model: str | Path | None,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path | None:
    """The local model folder for ``model``: a folder as it is (None stays None: the shipped
    model), a Hub id downloaded into, or found in, the Hugging Face cache.

    ``revision`` (a branch, tag or commit; or ``@revision`` in the id) pins what is loaded;
    ``local_files_only`` (or ``HF_HUB_OFFLINE=1``) reads the cache only; ``token`` reads a
    private or gated repo (default: the saved login or ``HF_TOKEN``).

    >>> resolve_model(None) is None
    True
    >>> resolve_model("no-such-folder")
    Traceback (most recent call last):
    bratseg.errors.ModelLoadError: no-such-folder: model folder not found (a Hub model is named namespace/name)
    """
    if model is None:
        return None
    if not is_hub_id(model):
        folder = Path(model).expanduser()
        if not folder.exists():
            hint = "" if "/" in str(model) else " (a Hub model is named namespace/name)"
            raise ModelLoadError(f"{model}: model folder not found{hint}")
        return folder
    repo_id, id_revision = split_revision(str(model))
    if revision is not None and id_revision is not None and revision != id_revision:
        raise ModelLoadError(f"{model}: two revisions given ({id_revision} in the id, {revision} as revision)")
    return _download(repo_id, revision or id_revision, cache_dir, local_files_only, token)


def _download(
    repo_id: str, revision: str | None, cache_dir: str | Path | None, local_files_only: bool, token: str | bool | None
) -> Path:
    """``snapshot_download`` of the model folder's files, every failure turned into one line."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub import errors as hub_errors

    spec = repo_id if revision is None else f"{repo_id}@{revision}"
    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    options = (f" --revision {revision}" if revision else "") + (f" --cache-dir {cache}" if cache_dir else "")
    get = f"`hf download {repo_id} {' '.join(DOWNLOAD_FILES)}{options}`"
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            allow_patterns=list(DOWNLOAD_FILES),
        )
    except hub_errors.HFValidationError as exc:
        raise ModelLoadError(f"{spec}: not a valid Hugging Face Hub repo id ({_first_line(exc)})") from None
    except hub_errors.RevisionNotFoundError:
        raise ModelLoadError(
            f"{spec}: the Hub repo {repo_id} has no revision {revision!r} (branch, tag or commit)"
        ) from None
    except hub_errors.GatedRepoError:
        raise ModelLoadError(
            f"{spec}: a gated repo: accept its conditions on its Hub page, then log in with that account "
            "(`hf auth login`, HF_TOKEN or token=...)"
        ) from None
    except hub_errors.RepositoryNotFoundError:
        raise ModelLoadError(f"{spec}: {_not_found(token)}") from None
    except hub_errors.IncompleteSnapshotError:
        raise ModelLoadError(
            f"{spec}: its copy in the Hugging Face cache ({cache}) is incomplete and the Hub cannot be reached; "
            f"finish it with network access: {get}"
        ) from None
    except hub_errors.LocalEntryNotFoundError as exc:
        raise ModelLoadError(f"{spec}: {_not_cached(exc, local_files_only, cache, get)}") from None
    except hub_errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 401:  # a token the Hub rejects (an unknown or private repo is a RepositoryNotFoundError)
            raise ModelLoadError(
                f"{spec}: the Hub rejected the token (HTTP 401); log in again (`hf auth login`)"
            ) from None
        raise ModelLoadError(f"{spec}: the Hugging Face Hub answered HTTP {status} ({_first_line(exc)})") from None
    except OSError as exc:  # an unwritable cache, a full disk
        raise ModelLoadError(f"{spec}: cannot write the Hugging Face cache {cache} ({exc})") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("httpx", "httpcore")):  # the connection failed mid-download
            raise ModelLoadError(
                f"{spec}: the download from the Hub failed ({type(exc).__name__}); try again"
            ) from None
        raise
    folder = Path(folder)
    missing = [name for name in MODEL_FOLDER_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"{spec}: not a bratseg model folder: the repo has no {', '.join(missing)} (a bratseg model holds "
            f"{', '.join(MODEL_FOLDER_FILES)}; publish one with `bratseg export RUN --out DIR --push-to-hub ID`)"
        )
    return folder


def _not_found(token: str | bool | None) -> str:
    from huggingface_hub import get_token

    if token is False or (token is None and get_token() is None):
        return (
            "no such model repo on the Hugging Face Hub, or a private one: log in with a token that can read it "
            "(`hf auth login`, HF_TOKEN or token=...)"
        )
    return "no such model repo on the Hugging Face Hub, or one the token cannot read"


def _not_cached(exc: Exception, local_files_only: bool, cache: Path, get: str) -> str:
    """Why an id is neither in the cache nor fetched: offline (by choice) or the Hub unreachable."""
    from huggingface_hub import constants

    if local_files_only or constants.HF_HUB_OFFLINE:
        how = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE=1"
        return (
            f"not in the Hugging Face cache ({cache}) and downloads are off ({how}); download it once with network "
            f"access ({get}, with the same HF_HOME), or drop {how}"
        )
    cause = exc.__cause__ or exc
    return (
        f"not in the Hugging Face cache ({cache}) and the Hub ({constants.ENDPOINT}) cannot be reached "
        f"({type(cause).__name__}); check the connection, or download it where the Hub is reachable ({get})"
    )


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def stage_upload(model_dir: str | Path, staging: str | Path, card: str | Path | None = None) -> Path:
    """Fill ``staging`` with what :func:`push_model_folder` uploads: the model folder's files and
    its card as ``README.md``, checked (:func:`bratseg.model.card.check_card`).

    The card is ``card`` (a Markdown file) if given, else the folder's own ``README.md`` when
    it carries Hub metadata, else one built from its ``bratseg.json``.
    """
    from bratseg.model.card import card_for_folder, check_card

    model_dir, staging = Path(model_dir), Path(staging)
    missing = [name for name in MODEL_FOLDER_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ModelLoadError(f"{model_dir}: missing {', '.join(missing)}; export the run with `bratseg export`")
    staging.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FOLDER_FILES:
        _link_or_copy(model_dir / name, staging / name)
    if card is not None:
        try:
            text = Path(card).read_text(encoding="utf-8")
        except OSError as exc:
            raise BratsegError(f"{card}: cannot read the model card ({exc.strerror})") from None
    else:
        text = card_for_folder(model_dir)
    check_card(text, source=str(card or model_dir / CARD_FILE))
    (staging / CARD_FILE).write_text(text, encoding="utf-8")
    return staging


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # the weights need not be copied: the upload only reads them
    except OSError:
        shutil.copy2(source, target)


def push_model_folder(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    card: str | Path | None = None,
) -> str:
    """Publish a model folder as the Hub model repo ``repo_id``; returns the commit's URL.

    Creates the repo if needed (``private`` applies to a new repo only), and the branch
    ``revision`` if given, then uploads the model files and the card in one commit
    (:func:`stage_upload`); ``upload_folder`` has the Hub validate the card's metadata first.
    """
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hub_errors

    if not is_hub_id(repo_id) or "@" in repo_id:
        raise BratsegError(f"{repo_id}: not a Hub repo id (namespace/name); give --revision for a branch")
    with tempfile.TemporaryDirectory(prefix="bratseg-upload-") as tmp:
        staged = stage_upload(model_dir, Path(tmp) / "model", card)
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
            if revision is not None:
                api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=staged,
                repo_type="model",
                revision=revision,
                commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
                allow_patterns=list(DOWNLOAD_FILES),
            )
        except ValueError as exc:  # the Hub's validation of the card's metadata
            raise BratsegError(f"{repo_id}: the Hub refused the model card ({_first_line(exc)})") from None
        except hub_errors.OfflineModeIsEnabled:
            raise BratsegError(f"{repo_id}: cannot publish with HF_HUB_OFFLINE=1") from None
        except hub_errors.HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            hint = (
                " (log in with a write token: `hf auth login`, HF_TOKEN or token=...)" if status in (401, 403) else ""
            )
            raise BratsegError(
                f"{repo_id}: the Hub refused the upload, HTTP {status}{hint}: {_first_line(exc)}"
            ) from None
        except OSError as exc:  # connection refused, DNS, timeouts (httpx errors are not OSErrors)
            raise BratsegError(f"{repo_id}: cannot reach the Hugging Face Hub ({exc})") from None
        except Exception as exc:
            if type(exc).__module__.startswith(("httpx", "httpcore")):  # the Hub cannot be reached
                raise BratsegError(f"{repo_id}: cannot reach the Hugging Face Hub ({type(exc).__name__})") from None
            raise
    return str(commit.commit_url)
