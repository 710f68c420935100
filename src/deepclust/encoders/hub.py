"""Weights from the Hugging Face model hub (timm, open_clip and transformers all keep theirs there).

A hub model's weights are looked up in the local hub cache first, without the network;
when they are absent, a quick probe tells whether the hub can be reached at all. Offline,
the encoder fails at once, in one line that names it and the command that fetches its
weights, instead of each library's retries and tracebacks.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlparse

from deepclust.errors import DeepclustError, option

PROBE_SECONDS = 1.0  # how long the reachability probe may take
# the weight files each library looks for in a hub repository, in its order of preference
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class HubWeights:
    """A file of a hub repository: `files` are alternatives, the first one found is used."""

    repo: str
    files: tuple[str, ...]

    def cached(self) -> str | None:
        """The local path of the first of `files` in the hub cache, or None (no network)."""
        from huggingface_hub import try_to_load_from_cache

        for name in self.files:
            path = try_to_load_from_cache(self.repo, name)
            if isinstance(path, str):
                return path
        return None

    def fetch_command(self) -> str:
        """The one command that downloads the weights into the hub cache."""
        return (
            'python -c "from huggingface_hub import hf_hub_download; '
            f"hf_hub_download('{self.repo}', '{self.files[0]}')\""
        )

    def require(self, label: str) -> None:
        """Return when the weights are cached or the hub is reachable; else the one-line error."""
        if self.cached() is None:
            require_hub(label, self.fetch_command())

    def local_file(self, label: str) -> str:
        """The cached file, downloaded first when the hub is reachable; offline and absent:
        a one-line DeepclustError naming encoder `label` and the fetch command."""
        path = self.cached()
        if path is not None:
            return path
        require_hub(label, self.fetch_command())
        try:
            return self._download()
        except Exception as e:  # the network or the hub failed half-way: the user's to retry
            reason = (str(e).splitlines() or [""])[0][:200]
            raise DeepclustError(
                f"encoder '{label}': downloading its weights from {self.repo} failed "
                f"({type(e).__name__}: {reason}). Retry, fetch them with: {self.fetch_command()}, "
                f"or give a local file: {option('encoder.weights', 'PATH')}."
            ) from None

    def _download(self) -> str:
        """The first of `files` the repository has, downloaded into the hub cache."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        for name in self.files[:-1]:
            try:
                return hf_hub_download(self.repo, name)
            except EntryNotFoundError:
                continue
        return hf_hub_download(self.repo, self.files[-1])


def offline_reason() -> str | None:
    """Why the hub cannot be reached ('HF_HUB_OFFLINE is set', 'no connection to HOST'), or
    None when a connection opens within PROBE_SECONDS (through the proxy when one is set)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    target = (url.hostname or "huggingface.co", url.port or 443)
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        target = (parsed.hostname or "", parsed.port or 80)
    return None if _connects(*target) else f"no connection to {target[0]}"


def _connects(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port opens within PROBE_SECONDS (a slow name lookup
    counts as no connection: the probe runs in a thread that is not waited for)."""
    opened: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS + 0.2)
    return bool(opened)


def require_hub(label: str, command: str) -> None:
    """Return when the hub can be reached; otherwise raise the one-line error for encoder
    `label`, whose weights `command` fetches."""
    reason = offline_reason()
    if reason is None:
        return
    raise DeepclustError(
        f"encoder '{label}': its weights are not on this machine and the model hub cannot be "
        f"reached ({reason}). Fetch them where there is internet with: {command} (into the "
        "Hugging Face cache, ~/.cache/huggingface or $HF_HOME; copy it here), or give a local "
        f"file: {option('encoder.weights', 'PATH')}."
    )
