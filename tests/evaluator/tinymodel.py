"""A tiny random CLIP saved as a house-format checkpoint: it carries its own config, so worker processes
load exactly the same weights without registering anything."""

import json
import tempfile
from pathlib import Path

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 1, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1},
}


def write_tiny_checkpoint(path: Path, *, model_name: str = "tiny-test", seed: int = 0) -> Path:
    import open_clip
    import torch

    from clipmodel.loading import CHECKPOINT_FORMAT

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / f"{model_name}-cfg.json"
        config.write_text(json.dumps(TINY_CFG))
        open_clip.add_model_config(config)
        torch.manual_seed(seed)
        model = open_clip.create_model(config.stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "model_name": model_name,
            "model_cfg": TINY_CFG,
            "preprocess_cfg": dict(model.visual.preprocess_cfg),
            "state_dict": model.state_dict(),
        },
        path,
    )
    return path
