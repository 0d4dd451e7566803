"""Make samples: one seeded random stream per sample, so output never depends on the worker count.

Sample ``i`` of a run asks family ``families[i % F]`` for its ``k = i // F``-th sample, and that
sample's random stream is ``default_rng([seed, split, family, k, 0])`` (stream 1 makes its preference
pair, stream 2 its follow-up questions). A family's samples are therefore the same whether it is
generated alone or mixed with others, in one process or many.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
from tqdm import tqdm

from internvl.data.world.choice import as_choice, can_be_choice
from internvl.data.world.describe import PROMPT as DESCRIBE_PROMPT
from internvl.data.world.describe import describe as describe_scene
from internvl.data.world.families import FAMILIES, FAMILY_NAMES, Family, Scene
from internvl.data.world.sample import SPLITS, Sample
from internvl.data.world.splits import scene_hash, split_of
from internvl.errors import InputError

R = TypeVar("R")
Job = tuple[str, str, int, int]  # (family, split, k, seed)
CHUNK = 32  # samples per task sent to a worker process
ASK_TRIES = 16  # draws of a follow-up task (or wording) before a repeat is accepted


def check_args(split: str, families: Sequence[str] | None) -> tuple[str, ...]:
    """Validate a split and a family list (None = all families); return the families."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    names = tuple(families) if families else FAMILY_NAMES
    unknown = [f for f in names if f not in FAMILIES]
    if unknown:
        raise InputError(
            f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
            f"choose from {', '.join(FAMILIES)}"
        )
    return names


def sample_rng(seed: int, split: str, family: str, k: int, stream: int = 0) -> np.random.Generator:
    """The random stream of one sample (``stream`` 1 is for its preference pair, 2 for follow-ups)."""
    return np.random.default_rng([seed, SPLITS.index(split), zlib.crc32(family.encode()), k, stream])


def generate_sample(family: str, split: str, k: int, seed: int = 0) -> Sample:
    """The ``k``-th sample of ``family`` in ``split`` for ``seed`` (a pure function of its arguments)."""
    return generate_conversation(family, split, k, seed, questions=1)[0]


def generate_conversation(
    family: str, split: str, k: int, seed: int = 0, questions: int = 1, describe: bool = False
) -> list[Sample]:
    """``questions`` samples about one picture: the ``k``-th sample, then follow-up questions.

    Follow-ups come from their own random stream (``stream`` 2), so the first sample is the same for
    any ``questions``. Each asks a task not asked yet when ``ASK_TRIES`` draws find one (a picture
    with one text, say, has only one), else repeats one with a prompt not used yet where it can; each
    is independently made multiple choice. With ``describe`` a last turn asks for a description of the
    whole picture (``describe.py``; training data only, families that have words for the scene). It
    comes last so that no question can be answered by reading the description back.
    """
    check_args(split, [family])
    if questions < 1:
        raise InputError(f"questions per image must be at least 1, got {questions}")
    fam = FAMILIES[family]
    rng = sample_rng(seed, split, family, k)
    ood = split == "test-ood"
    while True:  # in-distribution: draw scenes until one hashes into the wanted split (~1.25x / 10x)
        scene = fam.draw(rng, ood)
        if ood or split_of(scene.content) == split:
            break
    first_id = f"{split}-{family}-{k:06d}"
    samples = [_finish(fam, scene, rng, split, first_id)]
    more = sample_rng(seed, split, family, k, stream=2)
    tasks, prompts = [_task_key(scene.task)], [samples[0].prompt]
    for q in range(2, questions + 1):
        for _ in range(ASK_TRIES):
            task = fam.ask(scene.content, more, ood)
            if _task_key(task) not in tasks:
                break
        for _ in range(ASK_TRIES):  # a task asked before is at least worded (or optioned) differently
            sample = _finish(fam, Scene(scene.content, task, scene.style), more, split, f"{first_id}-q{q}")
            if sample.prompt not in prompts:
                break
        tasks.append(_task_key(task))
        prompts.append(sample.prompt)
        samples.append(sample)
    text = describe_scene(family, scene.content) if describe else None
    if text:
        samples.append(
            dataclasses.replace(
                samples[0],
                id=f"{first_id}-describe",
                question=DESCRIBE_PROMPT,
                answer=text,
                answer_type="description",
                options=[],
                answer_space=[],
                distractors=[],
                steps=[],
                box=None,
                ref=None,
                meta={"scene_hash": samples[0].meta["scene_hash"], "ood": samples[0].meta["ood"]},
            )
        )
    return samples


def _task_key(task: dict[str, Any]) -> str:
    return json.dumps(task, sort_keys=True)


def _finish(fam: Family, scene: Scene, rng: np.random.Generator, split: str, sample_id: str) -> Sample:
    """Build the sample, make it multiple choice at the family's rate, add the scene's hash and ood note."""
    sample = fam.build(scene, rng)
    if rng.random() < fam.choice_rate and can_be_choice(sample):
        sample = as_choice(sample, rng)
    ood = split == "test-ood"
    meta = {**sample.meta, "scene_hash": scene_hash(scene.content), "ood": fam.ood if ood else None}
    return dataclasses.replace(sample, id=sample_id, split=split, meta=meta)


def plan(n: int, split: str, seed: int = 0, families: Sequence[str] | None = None) -> list[Job]:
    """The jobs of a run of ``n`` samples, families interleaved round-robin."""
    names = check_args(split, families)
    return [(names[i % len(names)], split, i // len(names), seed) for i in range(n)]


def run_jobs(
    fn: Callable[[list[Job]], list[R]],
    jobs: Sequence[Job],
    workers: int = 1,
    progress: bool = True,
    desc: str = "world",
) -> Iterator[R]:
    """Apply ``fn`` to chunks of ``jobs`` (in worker processes when ``workers > 1``), results in order.

    ``fn`` must be picklable (a module-level function or such an object). A tqdm bar on stderr counts
    samples.
    """
    chunks = [list(jobs[i : i + CHUNK]) for i in range(0, len(jobs), CHUNK)]
    if workers <= 1:
        with _bar(len(jobs), progress, desc) as bar:
            for chunk in chunks:
                yield from fn(chunk)
                bar.update(len(chunk))
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(fn, chunks)  # starts the workers before the bar starts its monitor thread
        with _bar(len(jobs), progress, desc) as bar:
            for chunk, result in zip(chunks, results):
                yield from result
                bar.update(len(chunk))


def _bar(total: int, progress: bool, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="sample", file=sys.stderr, disable=not progress)


def _make(chunk: list[Job]) -> list[Sample]:
    return [generate_sample(family, split, k, seed) for family, split, k, seed in chunk]


def generate_samples(
    n: int,
    split: str = "train",
    seed: int = 0,
    families: Sequence[str] | None = None,
    workers: int = 1,
    progress: bool = False,
) -> list[Sample]:
    """``n`` samples in memory (PIL images included), identical for any ``workers``.

    Worker processes send the pictures back pickled, so for thousands of samples prefer
    ``export.export_sft``, whose workers write files and return only text.
    """
    return list(run_jobs(_make, plan(n, split, seed, families), workers, progress, desc=f"world {split}"))
