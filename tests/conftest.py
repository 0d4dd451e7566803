"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Decoding a tiny model is hundreds of small ops: a second intra-op thread only spins, and on a busy
    2-core machine it made test_generate.py ~6x slower (97 s vs 15 s measured). Opt in per module with
    `pytestmark = pytest.mark.usefixtures("one_thread")`; the thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def qwen2_tokenizer():
    """Qwen2's real BPE tokenizer with InternVL's special tokens, built offline (tests/inputs_fixtures.py)."""
    from tests.inputs_fixtures import build_qwen2_tokenizer

    return build_qwen2_tokenizer()
