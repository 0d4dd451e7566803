"""The procedural multimodal world: images, videos, questions and exactly checkable answers.

No weights can be downloaded here, so the project makes its own data: ten task families (recognition,
counting, spatial, reading, charts, detail, multi_image, video, grounding, reasoning), deterministic
from a seed, with disjoint ``train``/``val``/``test`` splits and a ``test-ood`` split of held-out
combinations; scorers per family; exports to the official SFT and MPO formats and a VLMEvalKit TSV.

    from internvl.data.world import generate_samples, SCORERS
    samples = generate_samples(100, split="val", seed=0)
    SCORERS[samples[0].family]("The answer is 3.", samples[0])
"""

from internvl.data.world.export import export_pairs, export_sft, export_tsv, load_conversations, load_samples
from internvl.data.world.families import FAMILIES, FAMILY_NAMES
from internvl.data.world.generate import generate_conversation, generate_sample, generate_samples
from internvl.data.world.media import read_video_frames
from internvl.data.world.pairs import make_pair, rejected_response
from internvl.data.world.sample import SPLITS, Sample
from internvl.data.world.score import SCORERS, check_steps, first_wrong_step, score

__all__ = [
    "FAMILIES",
    "FAMILY_NAMES",
    "SCORERS",
    "SPLITS",
    "Sample",
    "check_steps",
    "export_pairs",
    "export_sft",
    "export_tsv",
    "first_wrong_step",
    "generate_conversation",
    "generate_samples",
    "generate_sample",
    "load_conversations",
    "load_samples",
    "make_pair",
    "read_video_frames",
    "rejected_response",
    "score",
]
