"""Load any open_clip model (name + pretrained tag, local state dict, or house checkpoint) for inference."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch

from clipmodel import hub
from clipmodel.cache import file_sha256
from clipmodel.errors import HOW_TO_PROVIDE_WEIGHTS, ModelUnavailable

CONFIG_DIR = Path(__file__).parent / "configs"
# Registers the house configs (e.g. "house-vit-64") under their file names.
open_clip.add_model_config(CONFIG_DIR)

CHECKPOINT_FORMAT = "humanclip-checkpoint/1"
_REGISTERED_DIR: tempfile.TemporaryDirectory | None = None


@dataclass(frozen=True)
class LoadedClip:
    """A model ready for inference plus everything needed to use and identify it.

    ``autocast_dtype`` is None for plain fp32, else the dtype ``autocast()`` runs the forward passes in.
    ``fingerprint`` is a short stable id (e.g. ``ViT-B-32:openai:oc3.3.0``) for keying cached results;
    ``fingerprint_info`` has its parts. ``metadata`` holds a house checkpoint's extras (classnames, history).
    """

    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    device: torch.device
    autocast_dtype: torch.dtype | None
    name: str
    fingerprint: str
    fingerprint_info: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def logit_scale(self) -> float:
        """exp(t), the learned temperature that turns cosines into logits."""
        return float(self.model.logit_scale.detach().exp())

    def autocast(self):
        """Context manager for forward passes: bf16 autocast where configured, else a no-op."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_autocast(dtype: str, device: torch.device) -> torch.dtype | None:
    """``"auto"`` -> bf16 autocast on CUDA, fp32 elsewhere; ``"fp32"`` / ``"bf16"`` force it."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if dtype == "fp32":
        return None
    if dtype == "bf16":
        return torch.bfloat16
    raise ValueError(f"dtype must be 'auto', 'fp32' or 'bf16', not {dtype!r}")


def weights_sha256(model: torch.nn.Module) -> str:
    """Hash of the parameters, so randomly initialised models get distinct, reproducible fingerprints."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def make_fingerprint(*, name: str, source: str, sha256: str | None) -> tuple[str, dict[str, Any]]:
    """Short string + dict identifying weights: name, tag (or checkpoint hash) and open_clip version."""
    info = {"name": name, "pretrained": source, "checkpoint_sha256": sha256, "open_clip": open_clip.__version__}
    return f"{name}:{source}:oc{open_clip.__version__}", info


def read_house_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """The checkpoint dict if ``path`` is one of ours (it carries ``model_cfg``), None for any other torch file
    (a plain state dict, a TorchScript archive). Raises ModelUnavailable when the file is not a readable
    torch file at all (corrupt, truncated, or something else), so that is never mistaken for a state dict."""
    is_zip = zipfile.is_zipfile(path)
    try:
        # mmap keeps this cheap for multi-GB state dicts: tensors are not read until touched.
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as error:
        if not _intact_torch_file(path, is_zip=is_zip):
            raise ModelUnavailable(
                f"Checkpoint {path} is corrupt or not a torch file ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:200]}); replace it with a complete copy. {HOW_TO_PROVIDE_WEIGHTS}"
            ) from error
        return None  # a readable torch file weights_only refuses (e.g. TorchScript, other pickled objects)
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT and "model_cfg" in ckpt:
        return ckpt
    return None


def _intact_torch_file(path: str | os.PathLike, *, is_zip: bool) -> bool:
    """A zip archive (torch.save's format since 1.6) whose members all pass their CRC check, or a file in the
    legacy format, which starts with a pickle protocol marker."""
    if is_zip:
        try:
            with zipfile.ZipFile(path) as archive:
                return archive.testzip() is None
        except (zipfile.BadZipFile, OSError, EOFError):
            return False
    with open(path, "rb") as f:
        return f.read(2) in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def training_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """What one of our checkpoints was trained on: ``{"sha256": set of hex digests of the training images'
    file bytes, "base": the weights it started from or None}``; None for any other file (unknown data)."""
    ckpt = read_house_checkpoint(path)
    if ckpt is None or "trained_sha256" not in ckpt:
        return None
    args = ckpt.get("train_args") or {}
    base = None
    if args.get("pretrained"):
        base = f"{args.get('model')}/{args['pretrained']}"
    elif args.get("init_checkpoint"):
        base = str(args["init_checkpoint"])
    return {"sha256": digests_from_tensor(ckpt["trained_sha256"]), "base": base}


def digests_to_tensor(hex_digests: set[str] | list[str]) -> torch.Tensor:
    """Sorted sha256 hex digests as a uint8 [N, 32] tensor: compact, and loadable with weights_only=True."""
    rows = [list(bytes.fromhex(h)) for h in sorted(hex_digests)]
    return torch.tensor(rows, dtype=torch.uint8).reshape(-1, 32)


def digests_from_tensor(table: torch.Tensor) -> set[str]:
    raw = table.contiguous().numpy().tobytes()
    return {raw[i : i + 32].hex() for i in range(0, len(raw), 32)}


def write_checkpoint(
    *,
    path: str | os.PathLike,
    model: torch.nn.Module,
    model_name: str,
    model_cfg: dict[str, Any],
    **metadata: Any,
) -> Path:
    """Save a self-describing checkpoint that ``load_clip(checkpoint=path)`` loads with no other arguments.

    ``metadata`` must be plain data (str, numbers, lists, dicts, tensors): files load with weights_only=True.
    Written to a temp file and moved into place, so readers never see a truncated file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **metadata,
        "format": CHECKPOINT_FORMAT,
        "model_name": model_name,
        "model_cfg": model_cfg,
        "preprocess_cfg": _plain(dict(model.visual.preprocess_cfg)),
        "state_dict": model.state_dict(),
        "open_clip": open_clip.__version__,
        "torch": str(torch.__version__),  # TorchVersion is not a weights_only-safe type
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def register_config(name: str, model_cfg: dict[str, Any]) -> str:
    """Make ``model_cfg`` creatable by open_clip; reuse ``name`` when it is already registered identically."""
    if open_clip.get_model_config(name) == model_cfg:
        return name
    global _REGISTERED_DIR
    if _REGISTERED_DIR is None:
        _REGISTERED_DIR = tempfile.TemporaryDirectory(prefix="clipmodel-configs-")
    digest = hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:8]
    registered = f"{name}-{digest}"
    path = Path(_REGISTERED_DIR.name) / f"{registered}.json"
    path.write_text(json.dumps(model_cfg))
    open_clip.add_model_config(path)
    return registered


def _unavailable(what: str, error: BaseException) -> ModelUnavailable:
    offline = os.environ.get("HF_HUB_OFFLINE", "")
    why = f", {hub.decision}" if hub.decision else ""
    reason = str(error).rstrip(".")
    return ModelUnavailable(f"{what} not available (HF_HUB_OFFLINE={offline!r}{why}): {reason}. {HOW_TO_PROVIDE_WEIGHTS}")


def load_clip(
    *,
    name: str | None = None,
    pretrained: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    dtype: str = "auto",
) -> LoadedClip:
    """Load a model for inference (eval mode) with its preprocess and tokenizer.

    - ``name`` + ``pretrained`` tag: e.g. ``ViT-B-32``/``openai`` (``name="ViT-B-32/openai"`` also works).
    - ``name`` + ``checkpoint``: a local open_clip state dict for that architecture.
    - ``checkpoint`` alone: a checkpoint written by ``python -m clipmodel.train`` (it carries its config).
    - ``name`` alone: random weights (tests, benchmarks).
    Raises ModelUnavailable when weights are missing (offline hub cache miss, unknown tag, missing file).
    """
    if checkpoint is not None and pretrained is not None:
        raise ValueError("pass either pretrained (a tag) or checkpoint (a file), not both")
    if name and pretrained is None and checkpoint is None and "/" in name and ":" not in name:
        name, pretrained = name.split("/", 1)
    if pretrained is not None and os.path.isfile(pretrained):
        # open_clip accepts a file as "pretrained"; treat it as the checkpoint it is.
        checkpoint, pretrained = pretrained, None
    torch_device = resolve_device(device)
    autocast_dtype = resolve_autocast(dtype, torch_device)

    metadata: dict[str, Any] = {}
    preprocess_kwargs: dict[str, Any] = {}
    if checkpoint is not None:
        checkpoint = Path(checkpoint).expanduser()
        if not checkpoint.is_file():
            raise _unavailable(f"Checkpoint {checkpoint}", FileNotFoundError("no such file"))
        house = read_house_checkpoint(checkpoint)
        if house is not None:
            display_name = house["model_name"]
            arch = register_config(display_name, house["model_cfg"])
            pp = house.get("preprocess_cfg", {})
            preprocess_kwargs = {
                "image_mean": pp.get("mean"),
                "image_std": pp.get("std"),
                "image_interpolation": pp.get("interpolation"),
                "image_resize_mode": pp.get("resize_mode"),
            }
            metadata = {k: v for k, v in house.items() if k not in ("state_dict", "optimizer")}
        elif name is None:
            raise ValueError(f"{checkpoint} is a plain state dict; pass name= with its open_clip architecture")
        else:
            display_name = arch = name
        source_arg: str | None = str(checkpoint)
    else:
        if name is None:
            raise ValueError("pass name= (open_clip architecture) and/or checkpoint=")
        display_name = arch = name
        source_arg = pretrained

    from_hub = checkpoint is None and (pretrained is not None or arch.startswith("hf-hub:"))
    if not arch.startswith(("hf-hub:", "local-dir:")) and open_clip.get_model_config(arch) is None:
        raise ValueError(f"unknown open_clip model name {arch!r}; see open_clip.list_models()")
    if pretrained is not None and not open_clip.get_pretrained_cfg(arch, pretrained):
        raise _unavailable(
            f"Weights {arch}/{pretrained}",
            LookupError(f"unknown tag; known tags: {open_clip.list_pretrained_tags_by_model(arch)}"),
        )

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=source_arg, device=torch_device, **preprocess_kwargs
        )
    except (RuntimeError, OSError) as error:
        if from_hub:
            raise _unavailable(f"Weights {arch}/{pretrained}", error) from error
        raise
    model.eval()
    tokenizer = open_clip.get_tokenizer(arch)

    if checkpoint is not None:
        sha = file_sha256(checkpoint)
        source = f"sha256-{sha[:12]}"
    elif pretrained is not None:
        sha, source = None, pretrained
    elif arch.startswith("hf-hub:"):
        sha, source = None, "hub"
    else:
        sha = weights_sha256(model)
        source = f"random-{sha[:12]}"
    fingerprint, info = make_fingerprint(name=display_name, source=source, sha256=sha)
    return LoadedClip(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        device=torch_device,
        autocast_dtype=autocast_dtype,
        name=display_name,
        fingerprint=fingerprint,
        fingerprint_info=info,
        metadata=metadata,
    )
