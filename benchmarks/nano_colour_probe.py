"""Probe: does a nano model's decoder receive the colour of the object? A linear classifier on the most
distinct token of each picture, at the encoder's output and after the projector (the decoder's input).

    python benchmarks/nano_colour_probe.py MODEL_FOLDER

240 simple PIL pictures (benchmarks/nano_simple_pictures.py) in six colours: 180 train the probe, 60 test it.
High accuracy after the projector while the model still names colours wrongly means the decoder, not
the encoder or the projector, fails to read them (docs/nano/README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from nano_simple_pictures import BASIC_COLOURS, SHAPES, simple_picture  # noqa: E402

from internvl.inputs.image import tiles_to_tensor  # noqa: E402
from internvl.weights import load_model  # noqa: E402


def most_distinct(tokens: torch.Tensor) -> torch.Tensor:
    """The token farthest from the picture's typical (median) token: the object's, on a plain background."""
    return tokens[(tokens - tokens.median(dim=0).values).norm(dim=-1).argmax()]


def linear_probe(features: list[torch.Tensor], labels: list[int], train: int) -> float:
    x, y = torch.stack(features), torch.tensor(labels)
    x = (x - x[:train].mean(0)) / (x[:train].std(0) + 1e-6)
    weight = torch.zeros(x.shape[1], int(y.max()) + 1, requires_grad=True)
    optimizer = torch.optim.Adam([weight], lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(x[:train] @ weight, y[:train]).backward()
        optimizer.step()
    return float(((x[train:] @ weight).argmax(-1) == y[train:]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    args = parser.parse_args()
    model = load_model(args.model).float().eval()
    rng = np.random.default_rng(1)
    colours = list(BASIC_COLOURS)
    encoder, projected, labels = [], [], []
    for i in range(240):
        pixels = tiles_to_tensor([simple_picture(rng, colours[i % 6], SHAPES[rng.integers(6)])])
        with torch.no_grad():
            encoder.append(most_distinct(model.vision(pixels)[0, 1:]))
            projected.append(most_distinct(model.encode_images(pixels)[0]))
        labels.append(i % 6)
    print(
        f"colour from the most distinct token, 60 held-out pictures: encoder output "
        f"{linear_probe(encoder, labels, 180):.2f}, decoder input {linear_probe(projected, labels, 180):.2f}"
    )


if __name__ == "__main__":
    main()
