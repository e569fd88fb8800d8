"""PyTorch process settings: oneDNN on or off by CPU, with an override."""

from __future__ import annotations


def test_onednn_choice_follows_the_cpu_and_the_override(monkeypatch):
    from apprentice_hw import torch_backend

    monkeypatch.delenv(torch_backend.ONEDNN_ENV, raising=False)
    assert torch_backend.onednn_wanted() == torch_backend.cpu_has_avx512()
    for value, wanted in (("1", True), ("0", False)):
        monkeypatch.setenv(torch_backend.ONEDNN_ENV, value)
        assert torch_backend.onednn_wanted() is wanted
