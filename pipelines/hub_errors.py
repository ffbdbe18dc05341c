"""What goes wrong fetching from the hub, said so that the user knows what to do: huggingface_hub's errors (and a
full disk) as `HubError`s that name the repo, with a one-sentence summary for a status line."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import OfflineModeIsEnabled

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
