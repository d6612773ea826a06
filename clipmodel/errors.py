"""Exceptions raised by clipmodel."""


class ModelUnavailable(RuntimeError):
    """Model weights cannot be obtained (offline, not cached, or a missing checkpoint file)."""


HOW_TO_PROVIDE_WEIGHTS = (
    "How to provide weights: (1) pre-download them into the Hugging Face cache on a machine with internet "
    "(e.g. run load_clip once with HF_HUB_OFFLINE=0) and copy the cache (HF_HOME) here, or unset/zero "
    "HF_HUB_OFFLINE where the hub is reachable; (2) pass a local state dict with --checkpoint PATH "
    "(load_clip(name=..., checkpoint=PATH)); or (3) train the small house model offline with "
    "`python -m clipmodel.train` and load it with load_clip(checkpoint=PATH)."
)
