"""Hugging Face Hub access: download checkpoints and GGUF files into the shared HF cache.

Everything goes through ``huggingface_hub`` (``snapshot_download`` / ``hf_hub_download``), so its
cache layout and settings are honoured as they are for ``transformers``: ``HF_HOME`` /
``HF_HUB_CACHE`` choose the cache, ``HF_TOKEN`` or the stored login (``hf auth login``)
authenticate, ``HF_ENDPOINT`` picks the server, and ``HF_HUB_OFFLINE=1`` (or
``TRANSFORMERS_OFFLINE=1``) serves everything from the cache without touching the network.
Offline mode is read at call time, so setting the variable after import also works.

Every failure the Hub can produce (offline and not cached, repository or revision missing, gated
or private repository, bad token, no network) is raised as :class:`HubError` (an ``OSError``)
with a message that names the repository and says what to do; no raw HTTP-library traceback
escapes.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKPOINT_PATTERNS",
    "HubError",
    "download",
    "is_repo_id",
    "list_gguf",
    "resolve_checkpoint",
    "resolve_gguf",
]

#: Files of a Hugging Face checkpoint that conversion and loading need (weights in safetensors or
#: PyTorch format, the model config, the tokenizer); optimizer states, READMEs, ONNX exports and
#: GGUF variants in the same repository are not downloaded.
CHECKPOINT_PATTERNS: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.bin.index.json",
    "*.pt",
    "*.pth",
    "*.pt.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
)

# One part of a repo id under the Hub's naming rules: 1..96 ASCII characters from [A-Za-z0-9_.-],
# starting and ending with a letter, digit or underscore; "--" and ".." are rejected separately.
_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9_])?"
_NAMESPACED_ID = re.compile(rf"{_PART}/{_PART}")
_ANY_ID = re.compile(rf"(?:{_PART}/)?{_PART}")
_TRUE = {"1", "ON", "YES", "TRUE"}


class HubError(OSError):
    """A Hugging Face Hub download failed: offline and not cached, repository or revision
    missing, gated or unauthorized repository, invalid repo id, or no network.

    ``repo_id`` and ``revision`` name what was asked for (``revision`` is ``None`` for the
    default branch).
    """

    def __init__(self, message: str, repo_id: str | None = None, revision: str | None = None):
        super().__init__(message)
        self.repo_id = repo_id
        self.revision = revision


# ----------------------------------------------------------------------------------------------
# Repo ids and local paths


def _valid_id(s: str, pattern: re.Pattern[str]) -> bool:
    return (
        pattern.fullmatch(s) is not None
        and "--" not in s
        and ".." not in s
        and not s.endswith(".git")
    )


def _local(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.expanduser(os.fspath(path)))


def is_repo_id(s: str) -> bool:
    """True if ``s`` reads as a Hugging Face repo id ``"owner/name"`` and is not an existing
    local path.

    The Hub's naming rules apply to both parts: 1 to 96 ASCII letters, digits, ``_``, ``-``
    or ``.``, starting and ending with a letter, digit or ``_``, no ``--`` or ``..``, and the
    name does not end in ``.git``. Single-name legacy ids (``"gpt2"``) are not accepted here,
    since they cannot be told apart from a relative path.
    """
    if not isinstance(s, str) or not _valid_id(s, _NAMESPACED_ID):
        return False
    return not _local(s).exists()


def _check_repo_id(repo_id: object) -> str:
    if not isinstance(repo_id, str) or not _valid_id(repo_id, _ANY_ID):
        raise HubError(
            f"invalid Hugging Face repo id {repo_id!r}: expected 'owner/name' made of letters, "
            "digits, '_', '-' and '.' (each part at most 96 characters, no '--' or '..')",
            repo_id=str(repo_id),
        )
    return repo_id


# ----------------------------------------------------------------------------------------------
# huggingface_hub plumbing (imported lazily: `import bitnet.hub` stays cheap)


def _offline() -> bool:
    """Offline mode as huggingface_hub sees it, or as the environment says now (the library
    reads the variable once, at import)."""
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    if bool(check() if check is not None else constants.HF_HUB_OFFLINE):
        return True
    return any(
        os.environ.get(v, "").strip().upper() in _TRUE
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return _local(cache_dir).resolve()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


@functools.lru_cache(maxsize=1)
def _silent_tqdm() -> type:
    """A huggingface_hub tqdm class whose bars are always disabled (``progress=False``)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _SilentTqdm(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return _SilentTqdm


def _progress_kwargs(fn: Callable[..., Any], progress: bool) -> dict[str, Any]:
    if progress:
        return {}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    accepts = "tqdm_class" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )
    return {"tqdm_class": _silent_tqdm()} if accepts else {}


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exception types of whichever HTTP client huggingface_hub uses
    (httpx2, httpx or requests, depending on its version)."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for mod, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests.exceptions", ("ConnectionError", "Timeout")),
    ):
        try:
            m = __import__(mod, fromlist=["_"])
        except ImportError:
            continue
        types += [getattr(m, n) for n in names if isinstance(getattr(m, n, None), type)]
    return tuple(types)


def _error_types() -> dict[str, tuple[type[BaseException], ...]]:
    from huggingface_hub import errors

    def get(*names: str) -> tuple[type[BaseException], ...]:
        return tuple(t for n in names if isinstance(t := getattr(errors, n, None), type))

    return {
        "validation": get("HFValidationError"),
        "token": get("LocalTokenNotFoundError"),
        "gated": get("GatedRepoError"),
        "disabled": get("DisabledRepoError"),
        "repo": get("RepositoryNotFoundError"),
        "revision": get("RevisionNotFoundError"),
        "incomplete": get("IncompleteSnapshotError"),
        "local": get("LocalEntryNotFoundError", "OfflineModeIsEnabled"),
        "remote_entry": get("RemoteEntryNotFoundError", "EntryNotFoundError"),
        "http": get("HfHubHTTPError"),
    }


def _cached_revisions(cache: Path, repo_id: str) -> list[str]:
    """Branch/tag names under refs/ and commit hashes under snapshots/ of a cached repo."""
    folder = _repo_folder(cache, repo_id)
    refs = folder / "refs"
    names = sorted(p.relative_to(refs).as_posix() for p in refs.rglob("*") if p.is_file())
    snaps = folder / "snapshots"
    if snaps.is_dir():
        names += sorted(p.name for p in snaps.iterdir() if p.is_dir())
    return names


def _what(repo_id: str, revision: str | None, filename: str | None) -> str:
    s = f"'{repo_id}'" if filename is None else f"'{filename}' of '{repo_id}'"
    return s if revision is None else f"{s} (revision '{revision}')"


def _download_hint(repo_id: str, revision: str | None, filename: str | None) -> str:
    cmd = f"bitnet download {repo_id}"
    if revision is not None:
        cmd += f" --revision {revision}"
    if filename is not None:
        cmd += f" --include {filename}"
    return f"`{cmd}`"


def _not_cached_message(
    reason: str, repo_id: str, revision: str | None, filename: str | None, cache: Path
) -> str:
    folder = _repo_folder(cache, repo_id)
    what = _what(repo_id, revision, filename)
    if folder.is_dir():
        cached = _cached_revisions(cache, repo_id)
        listing = ", ".join(cached) if cached else "none"
        return f"{reason} and {what} is not in the cache at {cache} (cached revisions: {listing})"
    return f"{reason} and {what} is not in the cache at {cache}"


def _unreachable_message(
    cause: BaseException, repo_id: str, revision: str | None, filename: str | None, cache: Path
) -> str:
    reason = f"the Hugging Face Hub could not be reached ({_first_line(cause)})"
    msg = _not_cached_message(reason, repo_id, revision, filename, cache)
    return f"{msg}: check the network connection, proxy or HF_ENDPOINT, then retry"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _map_error(
    e: BaseException,
    repo_id: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    filename: str | None = None,
) -> HubError | None:
    """The HubError that explains ``e``, or None if ``e`` is not a Hub failure."""
    t = _error_types()
    what = _what(repo_id, revision, filename)
    login = "log in with `hf auth login`, set HF_TOKEN, or pass a token (--token)"

    def err(msg: str) -> HubError:
        return HubError(msg, repo_id=repo_id, revision=revision)

    if isinstance(e, t["validation"]):
        return err(f"invalid Hugging Face repo id or file name for {what}: {_first_line(e)}")
    if isinstance(e, t["token"]):
        return err(
            f"a stored Hugging Face token was requested for {what} but none is saved: "
            "run `hf auth login` or set HF_TOKEN"
        )
    if isinstance(e, t["gated"]):
        from huggingface_hub import constants

        endpoint = str(getattr(constants, "ENDPOINT", "https://huggingface.co")).rstrip("/")
        return err(
            f"'{repo_id}' is a gated repository and this account has no access: accept its "
            f"conditions at {endpoint}/{repo_id}, then {login}"
        )
    if isinstance(e, t["disabled"]):
        return err(
            f"'{repo_id}' has been disabled on the Hugging Face Hub and cannot be downloaded"
        )
    if isinstance(e, t["repo"]):
        return err(
            f"repository '{repo_id}' was not found on the Hugging Face Hub (or it is private and "
            f"no valid token was sent): check the name, or {login}"
        )
    if isinstance(e, t["revision"]):
        return err(
            f"revision '{revision or 'main'}' does not exist in '{repo_id}': check the branch, "
            "tag or full 40-character commit hash"
        )
    cache = _cache_root(cache_dir)
    if isinstance(e, t["incomplete"]):
        return err(
            f"the cached snapshot of {what} in {cache} is incomplete and the Hub cannot be "
            f"reached: {_first_line(e)} Run {_download_hint(repo_id, revision, filename)} "
            "with network access"
        )
    if isinstance(e, t["local"]):
        hint = _download_hint(repo_id, revision, filename)
        if _offline():
            reason = "offline (HF_HUB_OFFLINE=1)"
            msg = _not_cached_message(reason, repo_id, revision, filename, cache)
            return err(f"{msg}: run {hint} while online")
        cause = e.__cause__ if e.__cause__ is not None else e
        return err(_unreachable_message(cause, repo_id, revision, filename, cache))
    if isinstance(e, t["remote_entry"]):
        return err(f"file {what} does not exist on the Hugging Face Hub")
    if isinstance(e, t["http"]):
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        if status == 401:
            return err(f"the Hugging Face Hub refused the token for {what} (HTTP 401): {login}")
        if status == 403:
            return err(f"access to {what} is forbidden (HTTP 403): check the token's permissions")
        if status == 429:
            return err(f"the Hugging Face Hub rate-limited the download of {what} (HTTP 429)")
        code = f"HTTP {status}" if status is not None else "an HTTP error"
        return err(f"the Hugging Face Hub answered {code} for {what}: {_first_line(e)}")
    if isinstance(e, _transport_errors()):
        return err(
            f"the Hugging Face Hub could not be reached for {what} ({_first_line(e)}): check "
            "the network connection, proxy or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use "
            "the cache"
        )
    return None


def _call(
    fn: Callable[..., Any],
    where: tuple[str, str | None, str | os.PathLike[str] | None, str | None],
    /,
    **kwargs: Any,
) -> Any:
    """Calls a huggingface_hub function with ``kwargs`` and turns its failures into HubError.

    ``where`` = (repo_id, revision, cache_dir, filename) describes the request for the message.
    """
    try:
        return fn(**kwargs)
    except Exception as e:
        mapped = _map_error(e, *where)
        if mapped is None:
            raise
        raise mapped from e


def _snapshot(
    repo_id: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    allow_patterns: Sequence[str] | None,
    token: str | bool | None,
    progress: bool,
    local_only: bool,
) -> Path:
    import huggingface_hub as hh

    fn = hh.snapshot_download
    path = _call(
        fn,
        (repo_id, revision, cache_dir, None),
        repo_id=repo_id,
        revision=revision,
        cache_dir=None if cache_dir is None else str(_local(cache_dir)),
        allow_patterns=None if allow_patterns is None else list(allow_patterns),
        token=token,
        local_files_only=local_only,
        **_progress_kwargs(fn, progress),
    )
    return Path(path)


def _files_under(root: Path) -> list[str]:
    """Relative POSIX paths of the (non-dangling) files below ``root``, sorted."""
    if not root.is_dir():
        return []
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if p.is_file():
                out.append(p.relative_to(root).as_posix())
    return sorted(out)


def _matches(path: str, patterns: Sequence[str]) -> bool:
    # huggingface_hub's filter: fnmatch on the repo path, "dir/" meaning "dir/*".
    return any(fnmatch.fnmatch(path, p + "*" if p.endswith("/") else p) for p in patterns)


# ----------------------------------------------------------------------------------------------
# Public API


def download(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    allow_patterns: list[str] | None = None,
    token: str | bool | None = None,
    progress: bool = True,
) -> Path:
    """Downloads (or finds in the cache) a snapshot of a Hugging Face model repository.

    Args:
        repo_id: ``"owner/name"``.
        revision: branch, tag or full commit hash; ``None`` for the default branch.
        cache_dir: cache root; ``None`` uses huggingface_hub's (``HF_HUB_CACHE``, else
            ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``).
        allow_patterns: fnmatch patterns of the repository files to fetch (all if ``None``).
        token: passed to huggingface_hub (``None``: ``HF_TOKEN`` or the stored login; ``True``:
            require the stored login; ``False``: anonymous; a string: that token).
        progress: show huggingface_hub's tqdm progress bars (on stderr).

    Returns:
        The snapshot directory ``<cache>/models--owner--name/snapshots/<commit>``, holding the
        requested files.

    Raises:
        HubError: offline and not cached, repository or revision not found, gated or
            unauthorized, invalid id, network failure, or no file matches ``allow_patterns``.
    """
    _check_repo_id(repo_id)
    if isinstance(allow_patterns, str):
        allow_patterns = [allow_patterns]
    offline = _offline()
    snap = _snapshot(repo_id, revision, cache_dir, allow_patterns, token, progress, offline)
    files = _files_under(snap)
    wanted = files if allow_patterns is None else [f for f in files if _matches(f, allow_patterns)]
    if not wanted:
        what = _what(repo_id, revision, None)
        pats = (
            "any file"
            if allow_patterns is None
            else "no file matching " + ", ".join(allow_patterns)
        )
        if offline:
            raise HubError(
                f"offline (HF_HUB_OFFLINE=1) and the cache at {_cache_root(cache_dir)} holds "
                f"{'no file' if allow_patterns is None else pats} of {what}: run "
                f"`bitnet download {repo_id}` while online",
                repo_id=repo_id,
                revision=revision,
            )
        raise HubError(
            f"{what} has {'no files' if allow_patterns is None else pats} on the Hugging Face Hub",
            repo_id=repo_id,
            revision=revision,
        )
    return snap


def resolve_checkpoint(
    path_or_repo: str | os.PathLike[str],
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    token: str | bool | None = None,
    progress: bool = True,
) -> Path:
    """The local directory of a Hugging Face checkpoint, downloading it if needed.

    An existing local directory is returned as is. A repo id ``"owner/name"`` is downloaded
    (only the files a checkpoint needs, see :data:`CHECKPOINT_PATTERNS`) and its snapshot
    directory returned.

    Raises:
        FileNotFoundError: ``path_or_repo`` is neither an existing directory nor a repo id
            (or is a file).
        ValueError: ``revision`` given for a local directory.
        HubError: the download failed, or the repository has no checkpoint files.
    """
    s = os.fspath(path_or_repo)
    local = _local(s)
    if local.is_dir():
        if revision is not None:
            raise ValueError(
                f"revision {revision!r} given for the local directory '{s}': revisions apply "
                "only to Hugging Face repo ids"
            )
        return local
    if local.exists():
        raise FileNotFoundError(
            f"checkpoint '{s}' is a file; expected a checkpoint directory (config.json and "
            "weights) or a Hugging Face repo id 'owner/name'"
        )
    if isinstance(path_or_repo, str) and is_repo_id(path_or_repo):
        return download(
            path_or_repo,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=list(CHECKPOINT_PATTERNS),
            token=token,
            progress=progress,
        )
    raise FileNotFoundError(
        f"checkpoint '{s}' does not exist: expected a local directory or a Hugging Face repo "
        "id 'owner/name'"
    )


def _split_repo_file(s: str) -> tuple[str, str] | None:
    """``"owner/name/sub/file.gguf"`` -> (``"owner/name"``, ``"sub/file.gguf"``), else None."""
    parts = s.split("/")
    if len(parts) < 3 or not s.lower().endswith(".gguf"):
        return None
    repo_id, sub = "/".join(parts[:2]), parts[2:]
    if not _valid_id(repo_id, _NAMESPACED_ID):
        return None
    if any(p in ("", ".", "..") or "\\" in p for p in sub):
        return None
    return repo_id, "/".join(sub)


def _download_file(
    repo_id: str,
    filename: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    token: str | bool | None,
    progress: bool,
) -> Path:
    import huggingface_hub as hh

    fn = hh.hf_hub_download
    path = _call(
        fn,
        (repo_id, revision, cache_dir, filename),
        repo_id=repo_id,
        filename=filename,
        revision=revision,
        cache_dir=None if cache_dir is None else str(_local(cache_dir)),
        token=token,
        local_files_only=_offline(),
        **_progress_kwargs(fn, progress),
    )
    return Path(path)


def list_gguf(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
) -> list[str]:
    """Paths of the ``.gguf`` files in a Hub repository (listed online without downloading, or
    from the cached snapshot when offline). Raises :class:`HubError` like :func:`download`."""
    return _gguf_in_repo(repo_id, revision, cache_dir, token)[0]


def _gguf_in_repo(
    repo_id: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    token: str | bool | None,
) -> tuple[list[str], Path | None]:
    """The .gguf files of a repository: listed on the Hub when online (nothing downloaded),
    else found in the cached snapshot (then also returned)."""
    if not _offline():
        import huggingface_hub as hh

        api = hh.HfApi(token=token)
        try:
            files = api.list_repo_files(repo_id, revision=revision)
        except Exception as e:
            mapped = _map_error(e, repo_id, revision, cache_dir)
            if mapped is None:
                raise
            if not isinstance(e, _transport_errors()):
                raise mapped from e
            # No network: fall back to what the cache holds, as huggingface_hub does.
            try:
                snap = _snapshot(repo_id, revision, cache_dir, ["*.gguf"], token, False, True)
            except HubError:
                cache = _cache_root(cache_dir)
                msg = _unreachable_message(e, repo_id, revision, None, cache)
                raise HubError(msg, repo_id=repo_id, revision=revision) from e
        else:
            return sorted(f for f in files if f.lower().endswith(".gguf")), None
    else:
        snap = _snapshot(repo_id, revision, cache_dir, ["*.gguf"], token, False, True)
    return [f for f in _files_under(snap) if f.lower().endswith(".gguf")], snap


def resolve_gguf(
    path_or_repo: str | os.PathLike[str],
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    token: str | bool | None = None,
    progress: bool = True,
) -> Path:
    """The local path of a GGUF file, downloading it if needed.

    Accepts an existing local file (returned as is), ``"owner/name/sub/file.gguf"`` (that file
    of the repository is downloaded), or ``"owner/name"`` (the repository's single ``.gguf`` file
    is downloaded; with several, the error lists them so that the caller can name one).

    Raises:
        FileNotFoundError: not an existing file and not one of the repository forms.
        IsADirectoryError: a local directory was given (the message lists its .gguf files).
        ValueError: ``revision`` given for a local file.
        HubError: the download failed, or the repository has no (or several) .gguf files.
    """
    s = os.fspath(path_or_repo)
    local = _local(s)
    if local.is_file():
        if revision is not None:
            raise ValueError(
                f"revision {revision!r} given for the local file '{s}': revisions apply only "
                "to Hugging Face repo ids"
            )
        return local
    if local.is_dir():
        found = [f for f in _files_under(local) if f.lower().endswith(".gguf")][:10]
        hint = f" (it holds: {', '.join(found)})" if found else ""
        raise IsADirectoryError(f"'{s}' is a directory, not a .gguf file{hint}")
    if local.exists():
        raise FileNotFoundError(f"'{s}' is not a regular file")
    if not isinstance(path_or_repo, str):
        raise FileNotFoundError(f"GGUF file '{s}' does not exist")

    split = _split_repo_file(s)
    if split is not None:
        repo_id, filename = split
        return _download_file(repo_id, filename, revision, cache_dir, token, progress)

    if is_repo_id(s) and not s.lower().endswith(".gguf"):
        files, snap = _gguf_in_repo(s, revision, cache_dir, token)
        where = _what(s, revision, None)
        if snap is not None:
            where += f" in the cache at {_cache_root(cache_dir)}"
        if not files:
            raise HubError(
                f"{where} has no .gguf file: name a repository with a GGUF file, or convert "
                f"the checkpoint with `bitnet convert {s} -o OUT.gguf`",
                repo_id=s,
                revision=revision,
            )
        if len(files) > 1:
            names = ", ".join(f"{s}/{f}" for f in files)
            raise HubError(
                f"{where} has {len(files)} .gguf files; name one as 'owner/name/file.gguf': "
                f"{names}",
                repo_id=s,
                revision=revision,
            )
        if snap is not None:
            return snap / files[0]
        return _download_file(s, files[0], revision, cache_dir, token, progress)

    raise FileNotFoundError(
        f"GGUF file '{s}' does not exist: expected a local .gguf file, a Hugging Face repo id "
        "'owner/name', or 'owner/name/path/file.gguf'"
    )
