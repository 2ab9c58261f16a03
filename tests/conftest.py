"""Shared test configuration.

Tests are seeded, use tiny models and never touch the network.
"""

from __future__ import annotations

import copy
import os

import pytest

# Never reach a model hub from a test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one thread each avoids oversubscription.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


@pytest.fixture
def anyio_backend():
    """Async tests (the TUI's pilot) run on asyncio, the loop Textual uses."""
    return "asyncio"


@pytest.fixture
def one_thread():
    """One torch thread: the machine's cores are shared, and threads fight under load."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_base_folder(tmp_path_factory):
    """The tiny test pipeline saved as a diffusers folder: a spec another process can load."""
    from tests import evaluate_helpers as h

    folder = tmp_path_factory.mktemp("tiny-base") / "pipeline"
    # A copy: transformers' save_pretrained writes into the text encoder's config (its
    # architectures and dtype), which would change the shared pipeline's fingerprint, and so
    # the cache keys of every later evaluation with it in this process.
    copy.deepcopy(h.tiny_pipeline()).save_pretrained(folder)
    return str(folder)
