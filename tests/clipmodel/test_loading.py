import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import clipmodel
from clipmodel.loading import write_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_offline_pretrained_tag_with_empty_cache_raises_model_unavailable(tmp_path):
    # A fresh process, so huggingface_hub reads HF_HUB_OFFLINE and the empty cache location at import.
    script = textwrap.dedent(
        """
        import time, clipmodel
        start = time.monotonic()
        try:
            clipmodel.load_clip(name="ViT-B-32", pretrained="openai", device="cpu")
        except clipmodel.ModelUnavailable as error:
            print(f"RAISED {time.monotonic() - start:.2f}")
            print(error)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    # How long it takes is measured by benchmarks/bench_model_unavailable.py, not asserted here.
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("RAISED"), result.stdout + result.stderr
    message = result.stdout
    assert "--checkpoint" in message and "python -m clipmodel.train" in message and "HF_HUB_OFFLINE" in message


def test_unset_hf_hub_offline_is_decided_by_a_probe_of_the_hub_and_an_explicit_value_wins(monkeypatch):
    from clipmodel import hub

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused at once
    try:
        monkeypatch.delenv("HTTPS_PROXY", raising=False)
        monkeypatch.delenv("https_proxy", raising=False)
        for port, expected in ((listening.getsockname()[1], "0"), (closed.getsockname()[1], "1")):
            monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
            monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
            reason = hub.decide_offline()
            assert os.environ["HF_HUB_OFFLINE"] == expected and f"127.0.0.1:{port}" in reason
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's choice, even though the hub is unreachable
        assert hub.decide_offline() == "set in the environment" and os.environ["HF_HUB_OFFLINE"] == "0"
        # Through a proxy, the proxy is what must answer.
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listening.getsockname()[1]}")
        assert hub.hub_reachable()
    finally:
        listening.close()
        closed.close()


def test_unknown_pretrained_tag_raises_model_unavailable(tiny_name):
    with pytest.raises(clipmodel.ModelUnavailable, match="unknown tag"):
        clipmodel.load_clip(name="ViT-B-32", pretrained="no-such-tag", device="cpu")


def test_missing_checkpoint_file_raises_model_unavailable(tmp_path):
    with pytest.raises(clipmodel.ModelUnavailable, match="--checkpoint"):
        clipmodel.load_clip(checkpoint=tmp_path / "missing.pt", device="cpu")


def test_unknown_model_name_is_a_value_error():
    with pytest.raises(ValueError, match="unknown open_clip model name"):
        clipmodel.load_clip(name="no-such-architecture", device="cpu")


def _features(clip, images):
    with torch.no_grad():
        return clip.model.encode_image(images)


def test_house_checkpoint_round_trip_gives_identical_features(tiny_clip, tiny_name, tmp_path):
    path = write_checkpoint(
        path=tmp_path / "model.pt",
        model=tiny_clip.model,
        model_name="house-test",
        model_cfg=clipmodel.loading.open_clip.get_model_config(tiny_name),
        classes={"toy": ["red", "blue"]},
    )
    loaded = clipmodel.load_clip(checkpoint=path, device="cpu")  # no name: the checkpoint carries its config
    images = torch.randn(4, 3, 32, 32)
    assert torch.equal(_features(loaded, images), _features(tiny_clip, images))
    tokens = tiny_clip.tokenizer(["a photo of a cat."])
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_text(tokens), tiny_clip.model.encode_text(tokens))
    assert loaded.name == "house-test"
    assert loaded.metadata["classes"] == {"toy": ["red", "blue"]}
    assert loaded.fingerprint.startswith("house-test:sha256-")


def test_plain_state_dict_loads_with_its_architecture_name(tiny_clip, tiny_name, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    loaded = clipmodel.load_clip(name=tiny_name, checkpoint=path, device="cpu")
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(_features(loaded, images), _features(tiny_clip, images))
    with pytest.raises(ValueError, match="plain state dict"):
        clipmodel.load_clip(checkpoint=path, device="cpu")


def test_a_corrupt_or_truncated_checkpoint_is_reported_as_such_and_never_as_a_plain_state_dict(tiny_clip, tiny_name,
                                                                                              tmp_path):
    good = write_checkpoint(path=tmp_path / "good.pt", model=tiny_clip.model, model_name="house-test",
                            model_cfg=clipmodel.loading.open_clip.get_model_config(tiny_name))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all" * 100)
    headless = tmp_path / "headless.pt"  # the zip's first member header damaged
    headless.write_bytes(b"\0" * 64 + data[64:])
    for path in (truncated, garbage, headless):
        for name in (None, tiny_name):
            with pytest.raises(clipmodel.ModelUnavailable, match="corrupt or not a torch file") as failure:
                clipmodel.load_clip(checkpoint=path, name=name, device="cpu")
            assert "plain state dict" not in str(failure.value)
    assert clipmodel.load_clip(checkpoint=good, device="cpu").name == "house-test"


def test_fingerprint_is_stable_for_same_weights_and_differs_for_other_weights(tiny_clip, tiny_name, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    first = clipmodel.load_clip(name=tiny_name, checkpoint=path, device="cpu")
    second = clipmodel.load_clip(name=tiny_name, checkpoint=path, device="cpu")
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint_info["checkpoint_sha256"] == clipmodel.cache.file_sha256(path)
    assert first.fingerprint_info["open_clip"] in first.fingerprint
    torch.manual_seed(1)
    other = clipmodel.load_clip(name=tiny_name, device="cpu")
    assert other.fingerprint != tiny_clip.fingerprint  # random weights hash differently


def test_auto_device_uses_fp32_on_cpu_and_bf16_autocast_when_requested(tiny_name):
    clip = clipmodel.load_clip(name=tiny_name, device="cpu")
    assert clip.device.type == "cpu" and clip.autocast_dtype is None
    assert clipmodel.loading.resolve_autocast("auto", torch.device("cuda")) is torch.bfloat16
    assert clipmodel.loading.resolve_autocast("bf16", torch.device("cpu")) is torch.bfloat16
