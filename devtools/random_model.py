"""Write a randomly initialised SigLIP checkpoint (model + processor + tokenizer) for offline work.

    python -m devtools.random_model tiny ./models/tiny          # seconds; what the tests use
    python -m devtools.random_model base-512 ./models/base-512  # exact siglip2-base-patch16-512 shapes

The weights are random: embeddings mean nothing, but every code path (tokenizer, processor, both
towers, logit scale and bias) is the real transformers one. The config carries a marker, so the
service reports "random weights" loudly.
"""

from __future__ import annotations

import argparse
import math
import string
from pathlib import Path

from search.model.encoder import RANDOM_WEIGHTS_KEY

SIZES = {
    "tiny": {
        "vision": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        "text": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
        ),
    },
    # google/siglip2-base-patch16-512: 375.8M parameters (vision 93.5M, text 282.3M).
    "base-512": {
        "vision": dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=512,
            patch_size=16,
        ),
        "text": dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=64,
            vocab_size=256000,
        ),
    },
}


def build_tokenizer() -> object:
    """A Gemma tokenizer over a small in-memory vocabulary, with byte fallback for everything else."""
    from transformers import GemmaTokenizer

    vocab: dict[str, int] = {}
    for token in ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>"):
        vocab[token] = len(vocab)
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in "▁" + string.ascii_lowercase + string.digits + string.punctuation:
        vocab.setdefault(char, len(vocab))
    # Right padding: the text tower pools the last position (GemmaTokenizer defaults to left).
    return GemmaTokenizer(vocab=vocab, merges=[], padding_side="right")


def write_random_model(size: str, out_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipProcessor

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    shapes = SIZES[size]
    tokenizer = build_tokenizer()
    text = dict(shapes["text"])
    text.setdefault("vocab_size", len(tokenizer))
    text.update(pad_token_id=0, bos_token_id=2, eos_token_id=1)
    config = SiglipConfig(text_config=text, vision_config=dict(shapes["vision"]))
    setattr(config, RANDOM_WEIGHTS_KEY, True)

    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():
        # transformers initialises scale and bias to 0; SigLIP's own init is log(10) and -10. Non-trivial
        # values make tests exercise both.
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-2.5)

    image_size = shapes["vision"]["image_size"]
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("size", choices=sorted(SIZES))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_random_model(args.size, args.out_dir, args.seed)
    print(f"wrote a RANDOM-WEIGHT {args.size} SigLIP checkpoint to {path}")


if __name__ == "__main__":
    main()
