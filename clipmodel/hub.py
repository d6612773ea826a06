"""Online or offline: decide HF_HUB_OFFLINE before huggingface_hub is imported (it reads the variable once).

Offline with HF_HUB_OFFLINE unset, a missing pretrained weight costs ~46 s of hub retries before failing;
forcing it to 1 breaks downloads where the hub is reachable. So, unless the user set it, a short TCP probe of
the hub (or of the HTTPS proxy, when one is configured) decides: reachable -> 0 (named weights download),
unreachable -> 1 (a missing weight fails within seconds, with advice on how to provide it).
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 1.5
# Why HF_HUB_OFFLINE has its value, for error messages: "set by you", or the probe's outcome.
decision = ""


def _probe_target() -> tuple[str, int]:
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlsplit(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_reachable(*, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (or the proxy) opens within ``timeout`` s, name lookup included."""
    host, port = _probe_target()
    opened = threading.Event()

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened.set()
        except OSError:
            pass

    # A thread, because getaddrinfo has no timeout of its own and can hang for many seconds offline.
    threading.Thread(target=connect, name="hub-probe", daemon=True).start()
    return opened.wait(timeout)


def decide_offline() -> str:
    """Set HF_HUB_OFFLINE from the probe unless the user set it; returns (and remembers) why it has its value."""
    global decision
    if "HF_HUB_OFFLINE" in os.environ:
        decision = "set in the environment"
    else:
        host, port = _probe_target()
        reachable = hub_reachable()
        os.environ["HF_HUB_OFFLINE"] = "0" if reachable else "1"
        decision = f"{host}:{port} {'answered' if reachable else f'did not answer within {PROBE_TIMEOUT_S} s'}"
    return decision
