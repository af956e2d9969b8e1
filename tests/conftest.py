"""Test-wide settings: no network, and a private Hugging Face cache for the offline stand-ins.

The hub libraries read HF_HUB_OFFLINE / HF_HUB_CACHE when they are imported, so these are set
here, before any test module imports transformers or open_clip. The ``standins`` fixture fills
that cache with tiny, architecturally identical stand-ins of every backbone.
"""
import os
import sys
import tempfile

import pytest

HF_CACHE = tempfile.mkdtemp(prefix="baple-test-hf-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = HF_CACHE
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def standins():
    """{backbone name: MODEL.BACKBONE.WEIGHTS value} of the stand-ins written into HF_HUB_CACHE."""
    from clip_models.standins import write_standins

    return write_standins(HF_CACHE)


@pytest.fixture(autouse=True)
def _restore_stdout():
    """``setup_logger`` tees sys.stdout into a log file; undo it after each test."""
    stdout = sys.stdout
    yield
    if sys.stdout is not stdout:
        getattr(sys.stdout, "close", lambda: None)()
        sys.stdout = stdout
