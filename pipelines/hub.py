"""Fetching pipelines and single-file models from the Hugging Face hub: only the files that load.

A hub repo holds much that our loaders never read. Stable Diffusion 1.5's holds two single-file
checkpoints (12 GB), a safety checker, a non-EMA U-Net and fp32 and fp16 copies of every model:
23.6 GB of safetensors, of which a half-precision load reads 2.1 GB. So a repo is fetched in three
steps:

1. `list_repo`: its commit and file listing (path -> bytes), and `read_repo_text` its
   model_index.json, in memory: nothing is written, so a repo that cannot load leaves no trace;
2. `plan_download`: a pure function of those, the kind of pipeline, the dtype and allow_pickle:
   the exact files its loader will read (pipelines.layout: which components load and which
   weights file each reads, for this plan and for the loader alike);
3. `download`: refuse when the cache's disk is short, then fetch what the cache lacks, telling
   `progress(repo_id, done_bytes, total_bytes)` as bytes land.

What goes wrong (huggingface_hub's errors, a full disk) is raised as a `HubError` that names the repo and says
what to do, with a one-sentence summary for a status line.

It speaks huggingface_hub's public API (repo_info, list_repo_tree, hf_hub_download) and cache, so
HF_ENDPOINT, HF_HUB_CACHE, HF_HUB_OFFLINE and HF_TOKEN mean what they mean there. Offline, a
repo's listing is what the cache holds of it.
"""

from __future__ import annotations

import errno
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx2
import torch
from huggingface_hub import HfApi, constants, get_cached_repo_tree, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import OfflineModeIsEnabled, build_hf_headers, get_session, hf_raise_for_status
from tqdm.auto import tqdm

from pipelines.layout import MODEL_INDEX, HubFile, PipelineKind, parse_model_index, plan_download

# progress(repo_id, done_bytes, total_bytes): total is what the repo lists for the files a load lacks; called first
# with done 0 and last with done == total, from the download threads one call at a time; not called when the cache
# holds everything.
ProgressCallback = Callable[[str, int, int], None]
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_WORKERS = 4  # files fetched at once


@dataclass(frozen=True)
class RepoListing:
    """A repo at one commit: its files as the hub lists them, or offline as the cache holds them."""

    repo_id: str
    commit: str
    files: dict[str, int]  # path -> bytes
    offline: bool  # listed from the cache (offline, or the hub out of reach): nothing more can be fetched


def is_repo_id(text: str) -> bool:
    """'org/name' as the hub spells repo ids (no '--' or '..', which its cache layout reserves)."""
    return bool(_REPO_ID.fullmatch(text)) and "--" not in text and ".." not in text and len(text) <= 96


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def _snapshot(path: str, repo_path: str) -> Path:
    """The snapshot folder of a cached file's path."""
    return Path(path).parents[len(PurePosixPath(repo_path).parts) - 1]


def _cached(repo: RepoListing, path: str, cache: Path) -> str | None:
    """Where the cache holds a file of the repo at its commit, if it does."""
    found = try_to_load_from_cache(repo.repo_id, path, cache_dir=cache, revision=repo.commit)
    return found if isinstance(found, str) else None


# ----------------------------------------------------------------------------- 0. what goes wrong

REVISION = constants.DEFAULT_REVISION  # "main": the branch every repo is read at


class HubError(ValueError):
    """A repo that cannot be fetched: the message says what to do, `summary` the same in one short sentence."""

    SUMMARIES = {
        "offline": "{repo} is not downloaded and the hub cannot be reached (offline)",
        "not_found": "{repo} is not on the hub (check the id, or log in if it is private)",
        "gated": "{repo} is gated: accept its licence on the hub and log in",
        "unreachable": "{repo} could not be fetched: the hub did not answer",
        "no_room": "there is no room on disk to download {repo}",
        "changed": "{repo} changed on the hub while downloading: try again",
    }

    def __init__(self, message: str, repo_id: str, reason: str) -> None:
        super().__init__(message)
        self.repo_id, self.reason = repo_id, reason

    @property
    def summary(self) -> str:
        return self.SUMMARIES[self.reason].format(repo=self.repo_id)


@contextmanager
def hub_errors(repo_id: str, cache: Path) -> Iterator[None]:
    """huggingface_hub's errors as HubErrors that name the repo and say what to do."""
    page = f"{constants.ENDPOINT}/{repo_id}"
    try:
        yield
    except GatedRepoError as err:
        raise HubError(
            f"{repo_id} is gated: accept its licence on {page} (logged in there), then log in here with "
            "`hf auth login` (or set HF_TOKEN)",
            repo_id,
            "gated",
        ) from err
    except RepositoryNotFoundError as err:
        raise HubError(
            f"{repo_id} is not on the hub ({constants.ENDPOINT}): check the id; if it is private, log in "
            "with `hf auth login`",
            repo_id,
            "not_found",
        ) from err
    except RevisionNotFoundError as err:
        raise HubError(f"{repo_id} has no branch {REVISION!r} on {constants.ENDPOINT}", repo_id, "not_found") from err
    except RemoteEntryNotFoundError as err:
        raise HubError(
            f"{repo_id} lists a file the hub then could not find ({err}): run again", repo_id, "changed"
        ) from err
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as err:
        raise HubError(
            f"{repo_id} is not in the hub cache ({cache}) and the hub cannot be reached: {err}", repo_id, "offline"
        ) from err
    except (HfHubHTTPError, httpx2.HTTPError) as err:
        raise HubError(
            f"could not fetch {repo_id} from {constants.ENDPOINT} ({type(err).__name__}: {err}): check "
            f"the connection, or set HF_HUB_OFFLINE=1 to load what the cache ({cache}) holds",
            repo_id,
            "unreachable",
        ) from err
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise HubError(
            f"{repo_id}: the disk of {cache} filled up while downloading: free space there, or point "
            "HF_HUB_CACHE at a disk with room",
            repo_id,
            "no_room",
        ) from err


# ----------------------------------------------------------------------------- 1. what the repo holds


def list_repo(repo_id: str, anchors: Sequence[str], cache: Path) -> RepoListing:
    """The repo's commit on `main` and its files, read without writing anything. Offline, or with the hub out of
    reach, the cached snapshot that holds the first of `anchors` (a file every use of the repo fetches)."""
    if constants.is_offline_mode():
        cached = _cached_listing(repo_id, anchors, cache)
        if cached is None:
            raise HubError(
                f"{repo_id} is not in the hub cache ({cache}) and HF_HUB_OFFLINE is set: unset "
                "HF_HUB_OFFLINE to download it",
                repo_id,
                "offline",
            )
        return cached
    api = HfApi()
    try:
        commit = api.repo_info(repo_id, revision=REVISION).sha
    except (httpx2.ConnectError, httpx2.TimeoutException):
        cached = _cached_listing(repo_id, anchors, cache)  # as huggingface_hub does: the cache, if it has the repo
        if cached is None:
            raise
        return cached
    try:  # snapshot_download keeps a commit's listing in the cache; a commit never changes
        tree = get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache)
    except CachedRepoTreeNotFoundError:
        tree = [f for f in api.list_repo_tree(repo_id, recursive=True, revision=commit) if isinstance(f, RepoFile)]
    return RepoListing(repo_id, commit, {f.path: f.size for f in tree}, offline=False)


def _cached_listing(repo_id: str, anchors: Sequence[str], cache: Path) -> RepoListing | None:
    for anchor in anchors:
        found = try_to_load_from_cache(repo_id, anchor, cache_dir=cache, revision=REVISION)
        if isinstance(found, str):
            snapshot = _snapshot(found, anchor)
            files = {p.relative_to(snapshot).as_posix(): p.stat().st_size for p in snapshot.rglob("*") if p.is_file()}
            return RepoListing(repo_id, snapshot.name, files, offline=True)
    return None


def read_repo_text(repo: RepoListing, path: str, cache: Path) -> str:
    """A small file of the repo as text: from the cache when there, else fetched into memory (not cached)."""
    cached = _cached(repo, path, cache)
    if cached is not None:
        return Path(cached).read_text()
    if repo.offline:
        raise HubError(
            f"{repo.repo_id}: {path} is not in the hub cache ({cache}) and the hub is out of reach",
            repo.repo_id,
            "offline",
        )
    response = get_session().get(
        hf_hub_url(repo.repo_id, path, revision=repo.commit), headers=build_hf_headers(), follow_redirects=True
    )
    hf_raise_for_status(response)
    return response.text


# ----------------------------------------------------------------------------- 3. the download


def check_free_space(repo_id: str, needed: int, cache: Path) -> None:
    """Refuse a download the cache's disk has no room for, before any of it is fetched."""
    folder = next(p for p in (cache, *cache.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise HubError(
            f"{repo_id} needs {gigabytes(needed)} in {cache}, whose disk has {gigabytes(free)} free: "
            f"free {gigabytes(needed - free)} there, or point HF_HUB_CACHE at a disk with room",
            repo_id,
            "no_room",
        )


class _Tally:
    """Bytes done of one repo's download across the threads fetching its files; a file counts its listed size."""

    def __init__(self, repo_id: str, files: Sequence[HubFile], progress: ProgressCallback):
        self.repo_id, self.progress = repo_id, progress
        self.sizes = {f.path: f.size for f in files}
        self.done = dict.fromkeys(self.sizes, 0)
        self.lock = threading.Lock()

    def add(self, path: str, n: int) -> None:
        with self.lock:
            self.done[path] = min(max(self.done[path] + n, 0), self.sizes[path])  # n < 0: a restart from byte 0
            self.report()

    def report(self) -> None:
        self.progress(self.repo_id, sum(self.done.values()), sum(self.sizes.values()))

    def bar(self, path: str) -> type:
        """What hf_hub_download takes as `tqdm_class`: a bar that feeds this tally instead of drawing."""
        tally = self

        class Bar:
            def __init__(self, *args, **kwargs):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return None

            def update(self, n: float | None = 1) -> None:
                tally.add(path, int(n or 0))

            def update_transfer(self, n: float | None = 1) -> None:  # network bytes: `update` counts what is written
                return None

            def set_postfix_str(self, *args, **kwargs) -> None:
                return None

            set_transfer_postfix_str = set_postfix_str
            refresh = close = set_postfix_str

        return Bar


def download(
    repo: RepoListing, files: Sequence[HubFile], cache: Path, progress: ProgressCallback | None = None
) -> Path:
    """The repo's snapshot folder in the cache, holding `files`: what it lacks is fetched, after checking the disk."""
    missing = [f for f in files if _cached(repo, f.path, cache) is None]
    if missing and repo.offline:
        raise HubError(
            f"{repo.repo_id}: {', '.join(f.path for f in missing)} not in the hub cache ({cache}), and "
            "the hub is out of reach (HF_HUB_OFFLINE, or no connection)",
            repo.repo_id,
            "offline",
        )
    check_free_space(repo.repo_id, sum(f.size for f in missing), cache)
    tally = _Tally(repo.repo_id, missing, progress) if progress is not None and missing else None
    if tally is not None:
        tally.report()

    def fetch(f: HubFile) -> Path:
        # by branch name, so that the cache records main's commit (refs/main) for later offline use
        path = hf_hub_download(
            repo.repo_id,
            f.path,
            revision=REVISION,
            cache_dir=cache,
            tqdm_class=tally.bar(f.path) if tally is not None else None,
        )
        if tally is not None:
            tally.add(f.path, f.size)
        return _snapshot(path, f.path)

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        folders = set(pool.map(fetch, missing))
    snapshot = _snapshot_folder(repo, files[0], cache)
    if folders - {snapshot}:
        raise HubError(
            f"{repo.repo_id} changed on the hub while downloading (main moved on from {repo.commit}): run again",
            repo.repo_id,
            "changed",
        )
    return snapshot


def _snapshot_folder(repo: RepoListing, f: HubFile, cache: Path) -> Path:
    found = _cached(repo, f.path, cache)
    if found is None:
        raise HubError(
            f"{repo.repo_id} changed on the hub while downloading ({f.path} is not at {repo.commit}): run again",
            repo.repo_id,
            "changed",
        )
    return _snapshot(found, f.path)


def _cache(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir or constants.HF_HUB_CACHE).expanduser()


def _check_repo_id(repo_id: str) -> None:
    if not is_repo_id(repo_id):
        raise ValueError(f"{repo_id!r} is not a hub id like 'org/name'")


def fetch_pipeline(
    repo_id: str,
    kind: PipelineKind,
    dtype: torch.dtype,
    *,
    allow_pickle: bool = False,
    variant: str | None = None,
    progress: ProgressCallback | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """The cache's snapshot folder of a pipeline repo, holding what `kind`'s loader reads in `dtype` (see
    `plan_download`)."""
    _check_repo_id(repo_id)
    cache = _cache(cache_dir)
    with hub_errors(repo_id, cache):
        repo = list_repo(repo_id, [MODEL_INDEX], cache)
        where = f"{repo_id}/{MODEL_INDEX}"
        index = parse_model_index(read_repo_text(repo, MODEL_INDEX, cache), where) if MODEL_INDEX in repo.files else {}
        files = plan_download(index, repo.files, kind, dtype, allow_pickle, variant, where=where)
        return download(repo, files, cache, progress)


def fetch_file(
    repo_id: str,
    candidates: Sequence[str],
    *,
    progress: ProgressCallback | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """The first of `candidates` the repo holds, from the cache or downloaded, and nothing else of the repo: the
    weights of a single-file model such as an open_clip judge."""
    _check_repo_id(repo_id)
    cache = _cache(cache_dir)
    with hub_errors(repo_id, cache):
        repo = list_repo(repo_id, candidates, cache)
        name = next((c for c in candidates if c in repo.files), None)
        if name is None:
            raise ValueError(f"{repo_id} holds none of {', '.join(candidates)}")
        return download(repo, [HubFile(name, repo.files[name])], cache, progress) / name


def download_bars() -> ProgressCallback:
    """A progress callback that draws a tqdm bar per repo on stderr: the command-line tools' download display."""
    bars: dict[str, tqdm] = {}

    def report(repo_id: str, done: int, total: int) -> None:
        if repo_id not in bars:
            bars[repo_id] = tqdm(total=total, desc=f"downloading {repo_id}", unit="B", unit_scale=True, leave=True)
        bar = bars[repo_id]
        bar.update(done - bar.n)
        if done >= total:
            bars.pop(repo_id).close()

    return report
