"""Video: 8-16 frames of motion ("Which way does the red square move?", "Which object moves?").

Frames are 224x224 (one tile each after resizing, docs/images-and-video.md#video): a static noisy background, one target
moving in a straight line by 70-130 px, and 0-2 other objects that stay still or move elsewhere.
``draw`` asks about the target (track 0); ``ask`` about any track a question fits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from internvl.data.world.families.base import Family, Scene, draft, pick, word_distractors
from internvl.data.world.families.objects import object_style, paint_objects
from internvl.data.world.render import Obj, background
from internvl.data.world.sample import Sample
from internvl.data.world.vocab import distinct_styles

SIZE = 224
FRAMES = (8, 16)
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
KINDS = ("direction", "mover")
PHRASES = {
    "direction": (
        "Which way does the {a} move?",
        "In which direction is the {a} moving: left, right, up or down?",
        "Where does the {a} go during the video: left, right, up or down?",
    ),
    "mover": ("Which object moves in the video?", "Which shape is moving?", "What is the moving object?"),
}


def _path(rng: np.random.Generator, r: float, direction: str) -> tuple[list[int], list[int]]:
    """Start and end centre of a straight move that stays inside the frame."""
    dx, dy = DIRECTIONS[direction]
    dist = float(rng.uniform(70, 130))
    lo, hi = r + 3, SIZE - r - 3
    sx = rng.uniform(lo + max(0, -dx) * dist, hi - max(0, dx) * dist)
    sy = rng.uniform(lo + max(0, -dy) * dist, hi - max(0, dy) * dist)
    return [int(round(sx)), int(round(sy))], [int(round(sx + dx * dist)), int(round(sy + dy * dist))]


def draw(rng: np.random.Generator, ood: bool) -> Scene:
    kind = pick(rng, KINDS)
    n = int(rng.integers(1 if kind == "direction" else 2, 4))
    styles = distinct_styles(rng, n, ood=ood)
    tracks = []
    for i, (c, s) in enumerate(styles):
        r = float(rng.uniform(12, 22))
        moves = i == 0 or (kind == "direction" and rng.random() < 0.5)
        if moves:
            start, end = _path(rng, r, pick(rng, tuple(DIRECTIONS)))
        else:
            start = [int(rng.uniform(r + 3, SIZE - r - 3)), int(rng.uniform(r + 3, SIZE - r - 3))]
            end = list(start)
        tracks.append({"shape": s, "colour": c, "r": int(round(r)), "start": start, "end": end})
    order = [0, *[int(i) + 1 for i in rng.permutation(n - 1)]]  # the target is always drawn (listed) first
    return Scene(
        content={"frames": int(rng.integers(FRAMES[0], FRAMES[1] + 1)), "tracks": [tracks[i] for i in order]},
        task={"kind": kind, "target": 0},
        style=object_style(rng, scribbles=(0, 2)),
    )


def ask(content: dict[str, Any], rng: np.random.Generator, ood: bool) -> dict[str, Any]:
    """A kind picked uniformly among those that fit, then its target.

    "direction" fits every moving track, "mover" a video with one moving track among several. In
    test-ood the target is track 0, the held-out pair (as in ``draw``).
    """
    tracks = content["tracks"]
    moving = [i for i, tr in enumerate(tracks) if direction_of(tr) is not None]
    targets = [i for i in moving if i == 0 or not ood]
    options = {
        "direction": [{"kind": "direction", "target": i} for i in targets],
        "mover": [{"kind": "mover", "target": i} for i in targets if len(moving) == 1 and len(tracks) > 1],
    }
    kinds = [kind for kind in KINDS if options[kind]]
    if not kinds:
        raise ValueError("no video question fits: nothing moves")
    return pick(rng, options[pick(rng, kinds)])


def direction_of(track: dict[str, Any]) -> str | None:
    dx, dy = track["end"][0] - track["start"][0], track["end"][1] - track["start"][1]
    if dx == dy == 0:
        return None
    if abs(dx) > abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def render_frames(content: dict[str, Any], style: dict[str, Any]) -> list:
    base = background(style["background"], SIZE, SIZE)
    n = content["frames"]
    frames = []
    for k in range(n):
        t = k / (n - 1)
        # static objects first, then the movers, the target last: moving things pass over still ones
        tracks = sorted(enumerate(content["tracks"]), key=lambda it: (it[0] == 0, it[1]["start"] != it[1]["end"]))
        objs = [
            Obj(
                tr["shape"],
                tr["colour"],
                tr["start"][0] + t * (tr["end"][0] - tr["start"][0]),
                tr["start"][1] + t * (tr["end"][1] - tr["start"][1]),
                tr["r"],
            )
            for _, tr in tracks
        ]
        frames.append(paint_objects(base.copy(), objs, style))  # same jitter seed: steady colours
    return frames


def build(scene: Scene, rng: np.random.Generator) -> Sample:
    tracks = scene.content["tracks"]
    t = scene.task["target"]
    target = tracks[t]
    name = f"{target['colour']} {target['shape']}"
    frames = render_frames(scene.content, scene.style)
    meta = {"tracks": tracks, "kind": scene.task["kind"]}
    if scene.task["kind"] == "direction":
        answer = direction_of(target)
        assert answer is not None
        question = pick(rng, PHRASES["direction"]).format(a=name)
        return draft(
            "video",
            question,
            answer,
            "word",
            frames=frames,
            answer_space=list(DIRECTIONS),
            distractors=word_distractors(rng, answer, tuple(DIRECTIONS)),
            meta=meta,
        )
    names = [f"{tr['colour']} {tr['shape']}" for tr in tracks]
    return draft(
        "video",
        pick(rng, PHRASES["mover"]),
        name,
        "object",
        frames=frames,
        answer_space=names,
        distractors=[nm for i, nm in enumerate(names) if i != t],
        meta=meta,
    )


FAMILY = Family("video", draw, ask, build, ood="the moving object is an unseen colour-shape pair")
