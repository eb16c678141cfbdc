"""A small random-weight Kokoro checkpoint in Kokoro's on-disk format, for tests and
benchmarks: loaded through exactly the code that loads the real weights."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from narrator.weights.sources import (
    CONFIG,
    VOICES,
    WEIGHTS,
    kokoro_config_text,
)


def write_tiny_checkpoint(folder: Path, voices: tuple[str, ...] = ("af_heart",)) -> Path:
    """Write config.json, kokoro-v1_0.pth and voices/*.pt with random weights.

    kokoro fixes the style (128), hidden (512) and decoder sizes, so only ALBERT shrinks;
    a large negative duration bias makes every phoneme one frame, so a render is fast.
    """
    import torch
    from kokoro import KModel

    config = json.loads(kokoro_config_text())
    config["plbert"] = dict(
        hidden_size=64,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        num_hidden_layers=1,
        dropout=0.1,
    )
    config["n_layer"] = 1
    config["istftnet"] |= dict(resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]])
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        # KModel insists on loading a weights file; an empty dict keeps its random init.
        empty = Path(scratch) / "empty.pth"
        torch.save({}, empty)
        model = KModel(repo_id="hexgrad/Kokoro-82M", config=config, model=str(empty))
    with torch.no_grad():
        model.predictor.duration_proj.linear_layer.bias.fill_(-20.0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    parts = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
    torch.save({k: getattr(model, k).state_dict() for k in parts}, folder / WEIGHTS)
    (folder / VOICES).mkdir(exist_ok=True)
    generator = torch.Generator().manual_seed(1)
    for voice in voices:
        pack = torch.randn(510, 1, 256, generator=generator) * 0.1
        torch.save(pack, folder / VOICES / f"{voice}.pt")
    return folder
