"""The main job on the embedded default: the nano model answers questions about world pictures.

    python -m internvl.nano.demo [--n 2] [--split test]

For each task family it draws held-out samples from the procedural world, asks the embedded nano
model through the public API (`internvl.load()`), and prints the question, the answer, the expected
answer and the world's own score.
"""

from __future__ import annotations

import argparse
import time

from internvl.chat import load
from internvl.data.world import FAMILY_NAMES, SCORERS, generate_sample
from internvl.inputs.prompt import frame_lines


def ask(chat, sample) -> str:  # type: ignore[no-untyped-def]
    """The sample's question, posed the way the model was trained (video: one tile per frame)."""
    if sample.frames:
        frames = frame_lines(len(sample.frames))
        return chat.ask(frames + sample.prompt, images=sample.frames, max_tiles=1, max_new_tokens=96)
    return chat.ask(sample.prompt, images=sample.images, max_new_tokens=96)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1, help="samples per family")
    parser.add_argument("--split", default="test", choices=["test", "test-ood", "val"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    chat = load()  # the embedded nano model
    print(f"loaded the embedded nano model in {time.perf_counter() - start:.1f} s")
    total = correct = 0.0
    for family in FAMILY_NAMES:
        for k in range(args.n):
            sample = generate_sample(family, args.split, k, args.seed)
            answer = ask(chat, sample)
            score = SCORERS[family](answer, sample)
            total, correct = total + 1, correct + score
            media = f"{len(sample.frames)} video frames" if sample.frames else f"{len(sample.images)} image(s)"
            question = sample.question.replace("\n", " ")
            print(
                f"\n[{family}] ({media}) {question}\n  answer:   {answer!r}\n  expected: {sample.response!r}  "
                f"score {score:.0f}"
            )
    print(f"\n{correct:.0f} of {total:.0f} correct ({time.perf_counter() - start:.1f} s in all)")


if __name__ == "__main__":
    main()
