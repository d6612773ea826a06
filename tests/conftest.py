import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Each test writes images to its own media root, never to var/."""
    settings.MEDIA_ROOT = tmp_path / "media"
