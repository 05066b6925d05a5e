#!/usr/bin/python3
"""The seed notebook's text-to-image network in PyTorch, written from its specification, for
golden numbers and interoperability checks. Module names match the notebook's, so its
state_dict names are the ones inkgrad uses.

  notebook_model.py check-inkgrad FILE      load an inkgrad model.safetensors with strict=True,
                                            then generate one image per prompt (eval, no-grad)
  notebook_model.py write-torch FILE        write a freshly initialised PyTorch model's
                                            state_dict as safetensors (for inkgrad to load)
"""
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_safetensors_golden import load_file, save_file  # noqa: E402

PROMPTS = ["horizontal line", "vertical line", "two vertical lines", "diagonal line", "cross",
           "circle", "square", "dense center", "sparse dots"]


def encode(text, max_length=32):
    """PAD=0, space=1, a-z=2..27; lowercase; unknown characters dropped; truncate, then pad."""
    ids = [1 if c == " " else ord(c) - ord("a") + 2
           for c in text.lower() if c == " " or "a" <= c <= "z"][:max_length]
    return ids + [0] * (max_length - len(ids))


class TextEncoder(nn.Module):
    def __init__(self, vocab_size=28, embed_dim=32, latent_dim=64):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.projection = nn.Sequential(nn.Linear(embed_dim, 128), nn.ReLU(),
                                        nn.Linear(128, latent_dim))

    def forward(self, token_ids):
        mask = (token_ids != 0).float().unsqueeze(-1)
        pooled = (self.embedding(token_ids) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return self.projection(pooled)


class ImageGenerator(nn.Module):
    def __init__(self, latent_dim=64, noise_dim=32):
        super().__init__()
        self.noise_dim = noise_dim
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim + noise_dim, 256), nn.BatchNorm1d(256), nn.ReLU(),
            nn.Linear(256, 512), nn.BatchNorm1d(512), nn.ReLU(),
            nn.Linear(512, 784), nn.Sigmoid())

    def forward(self, latent, noise):
        return self.decoder(torch.cat([latent, noise], dim=1)).view(latent.shape[0], 1, 28, 28)


class TextToImageModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.text_encoder = TextEncoder()
        self.image_generator = ImageGenerator()

    def forward(self, token_ids, noise):
        return self.image_generator(self.text_encoder(token_ids), noise)


def check_inkgrad(path):
    model = TextToImageModel()
    model.load_state_dict(load_file(path), strict=True)
    model.eval()
    with torch.no_grad():
        tokens = torch.tensor([encode(p) for p in PROMPTS])
        images = model(tokens, torch.randn(len(PROMPTS), 32))
    print(f"{path}: load_state_dict(strict=True) ok; generated {tuple(images.shape)}, "
          f"mean pixel {images.mean().item():.4f}")
    for prompt, image in zip(PROMPTS, images):
        print(f"  {prompt:20s} lit pixels (>0.5): {(image > 0.5).sum().item()}")


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("check-inkgrad", "write-torch"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "check-inkgrad":
        check_inkgrad(sys.argv[2])
    else:
        torch.manual_seed(0)
        save_file(TextToImageModel().state_dict(), sys.argv[2], {"format": "pt"})
        print(f"wrote {sys.argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
