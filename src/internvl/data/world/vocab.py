"""The world's vocabulary: colours, shapes, sizes, words and labels, and what is held out.

One source of truth for every name a question or an answer can use, and for the combinations the
``test-ood`` split keeps away from training (unseen colour-shape pairs, unseen words). Every family
draws its objects through :func:`object_styles`, so no in-distribution image can contain a held-out pair.
"""

from __future__ import annotations

import numpy as np

# Saturated object colours (RGB). Backgrounds are pale and desaturated, so these always stand out.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 205, 20),
    "green": (35, 160, 55),
    "cyan": (20, 190, 210),
    "blue": (35, 70, 215),
    "purple": (135, 50, 175),
    "pink": (240, 100, 180),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "hexagon")

# Size classes by radius in pixels on a 448 canvas; the gaps keep the classes apart.
SIZES: dict[str, tuple[int, int]] = {"small": (14, 19), "medium": (26, 34), "large": (46, 58)}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)


def size_name(radius: float) -> str:
    """The size class whose radius range is closest to ``radius`` (rows store rounded radii)."""
    return min(SIZES, key=lambda name: max(SIZES[name][0] - radius, radius - SIZES[name][1], 0.0))


# Held out of train/val/test: each colour and each shape is still seen in training, only these pairs are not.
OOD_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "star"),
        ("orange", "hexagon"),
        ("green", "triangle"),
        ("blue", "diamond"),
        ("purple", "circle"),
        ("pink", "square"),
    }
)
IN_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOUR_NAMES for s in SHAPES if (c, s) not in OOD_PAIRS)

# Short common words for the reading family. Every 7th word is held out for test-ood.
WORDS: tuple[str, ...] = (
    "apple",
    "river",
    "stone",
    "cloud",
    "light",
    "house",
    "green",
    "table",
    "music",
    "dream",
    "bread",
    "chair",
    "water",
    "plant",
    "smile",
    "train",
    "paper",
    "glass",
    "sugar",
    "horse",
    "tiger",
    "lemon",
    "night",
    "ocean",
    "piano",
    "queen",
    "radio",
    "snake",
    "tower",
    "voice",
    "whale",
    "zebra",
    "eagle",
    "flame",
    "grape",
    "heart",
    "igloo",
    "jelly",
    "kite",
    "llama",
    "mango",
    "nurse",
    "olive",
    "pearl",
    "quilt",
    "robot",
    "salad",
    "tulip",
    "unity",
    "vivid",
    "wagon",
    "yacht",
    "beach",
    "candy",
    "delta",
    "frost",
    "ghost",
    "honey",
    "ivory",
    "jolly",
    "karma",
    "lunar",
    "maple",
    "noble",
    "orbit",
    "panda",
    "quick",
    "royal",
    "sunny",
    "token",
    "urban",
    "vapor",
    "windy",
    "young",
    "blue",
    "cat",
    "dog",
    "sun",
    "moon",
    "star",
    "tree",
    "fish",
    "bird",
    "book",
    "door",
    "lamp",
    "road",
    "ship",
    "rain",
    "snow",
    "fire",
    "wind",
    "leaf",
    "milk",
    "rice",
    "salt",
    "gold",
    "iron",
    "wood",
    "sand",
    "ball",
    "cake",
    "coin",
    "drum",
    "frog",
    "gift",
    "hat",
    "key",
    "map",
    "owl",
    "pen",
    "cup",
    "box",
    "bus",
    "car",
    "egg",
    "fox",
    "ink",
    "jam",
    "kid",
)
OOD_WORDS: frozenset[str] = frozenset(WORDS[6::7])
IN_WORDS: tuple[str, ...] = tuple(w for w in WORDS if w not in OOD_WORDS)

# Bar labels for charts (short so that they fit under a bar).
LABELS: tuple[str, ...] = (
    "ants",
    "bees",
    "cows",
    "dogs",
    "eels",
    "figs",
    "goats",
    "hens",
    "ibis",
    "jays",
    "kiwis",
    "lynx",
    "mice",
    "newts",
    "owls",
    "pigs",
    "quail",
    "rams",
    "seals",
    "toads",
)
CHART_TITLES: tuple[str, ...] = ("Animals seen", "Weekly count", "Survey", "Sales", "Votes", "")

NUMBER_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
)


def plural(shape: str) -> str:
    """English plural of a shape name (all regular)."""
    return shape + "s"


# Dark ink colours for text (reading family), named so two texts can be told apart in a question.
TEXT_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "red": (185, 20, 20),
    "blue": (25, 45, 185),
    "green": (20, 115, 40),
    "purple": (105, 30, 135),
}


def distinct_styles(rng: np.random.Generator, n: int, ood: bool = False) -> list[tuple[str, str]]:
    """``n`` (colour, shape) pairs with all colours different and all shapes different.

    Why: then "the <shape>" and "the <colour> object" each name exactly one object. The first pair is
    held out when ``ood``; no other pair ever is. ``n`` must be <= 6 (the number of shapes).
    """
    if n > len(SHAPES):
        raise ValueError(f"at most {len(SHAPES)} objects can have distinct shapes, asked for {n}")
    for _attempt in range(50):  # greedy can dead-end on a held-out pair; a fresh order fixes it
        picked: list[tuple[str, str]] = []
        if ood:
            held = sorted(OOD_PAIRS)
            picked.append(held[int(rng.integers(len(held)))])
        for i in rng.permutation(len(IN_PAIRS)):
            c, s = IN_PAIRS[int(i)]
            if len(picked) == n:
                break
            if all(c != pc and s != ps for pc, ps in picked):
                picked.append((c, s))
        if len(picked) == n:
            return picked
    raise ValueError(f"could not find {n} distinct colour-shape pairs")
