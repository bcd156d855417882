"""Device choice at startup: cuda if present and allowed, else mps, else cpu."""
from __future__ import annotations

import os
import sys

import pytest

from runtime.config import Settings
from runtime.device import select_device
from runtime.process import set_runtime_switches

pytestmark = pytest.mark.unit


def test_cpu_machine_picks_cpu_and_says_why():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has cuda")
    choice = select_device(Settings())
    assert choice.name == "cpu" and choice.reason


def test_use_cuda_false_never_picks_cuda():
    assert select_device(Settings(use_cuda=False)).name in ("mps", "cpu")


def test_mps_fallback_variable_is_set_for_torch(monkeypatch):
    monkeypatch.delenv("PYTORCH_ENABLE_MPS_FALLBACK", raising=False)
    interval = sys.getswitchinterval()
    try:
        set_runtime_switches(Settings())
    finally:
        sys.setswitchinterval(interval)
    assert os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] == "1"


def test_cpu_only_machine_never_reports_cuda():
    settings = Settings()
    state = select_device(settings).describe(settings)
    if state["cuda_available"]:
        pytest.skip("this machine has cuda")
    assert state["selected"] != "cuda" and "use_cuda" not in state
    assert state["cuda_allowed"] is True  # USE_CUDA's default: allowed, not present


def test_invalid_values_name_the_valid_ones():
    with pytest.raises(ValueError, match="'cuda', 'mps' or 'cpu'"):
        Settings(device="tpu")
    with pytest.raises(ValueError, match="'auto', 'piper' or 'coqui'"):
        Settings(tts_engine="espeak")
