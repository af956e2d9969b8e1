"""Tests never reach the network: the hub is offline and its cache is a session folder that the
``standins`` fixture fills with tiny stand-ins of every backbone. Both variables must be set before
transformers, huggingface_hub or open_clip are imported (they read them at import)."""
import os
import tempfile

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="baple-hub-cache-")


@pytest.fixture(scope="session")
def standins():
    """{backbone name: MODEL.BACKBONE.WEIGHTS value} of the stand-ins written into HF_HUB_CACHE."""
    from clip_models.standins import write_standins

    return write_standins(os.environ["HF_HUB_CACHE"])
