"""The Hugging Face hub, reached at once or not at all (``data.name: hf`` with ``hub``, timm's
``pretrained`` weights).

Without a network, ``huggingface_hub`` retries each request with a growing delay: a load waits
30-50 s and prints a dozen retry lines before it fails. rlmix looks first (:func:`unreachable`:
``HF_HUB_OFFLINE``, or one TCP connection to the hub, or to the HTTPS proxy, within a few
seconds); when the hub is out of reach the load runs in offline mode (:func:`offline`), where the
Hugging Face libraries read their local cache and send no request, so it succeeds from the cache
or fails at once, and the caller says in one line that it needs the network or a local cache.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator

HUB_TIMEOUT_S = 3.0  # how long the connection check waits


def unreachable(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be reached now (``HF_HUB_OFFLINE`` is set, or no TCP
    connection to it or to the HTTPS proxy opens within ``timeout`` seconds); None when it
    can."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    target = urllib.parse.urlsplit(proxy) if proxy else endpoint
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((target.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"cannot reach {target.hostname}: {e.strerror or e}"
    return None


@contextlib.contextmanager
def offline(active: bool = True) -> Iterator[None]:
    """Within the block (when ``active``), ``huggingface_hub`` and ``datasets`` are in offline
    mode: they read their local cache and send no request. Their settings are restored after."""
    if not active:
        yield
        return
    from huggingface_hub import constants

    switches = [(constants, "HF_HUB_OFFLINE")]
    config = sys.modules.get("datasets.config")  # read by datasets, if it is in use
    if config is not None:
        switches += [(config, "HF_HUB_OFFLINE"), (config, "HF_DATASETS_OFFLINE")]
    saved = [
        (module, name, getattr(module, name)) for module, name in switches if hasattr(module, name)
    ]
    for module, name, _ in saved:
        setattr(module, name, True)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


__all__ = ["HUB_TIMEOUT_S", "offline", "unreachable"]
