"""The processor (docs/prompts.md) against the official prompt recipe, written independently here,
tokenised with a real Qwen2 tokenizer; tiles and pixels against the literal tiling reference."""

import pytest
import torch

from internvl.errors import ConfigError, InputError
from internvl.inputs.processor import Processor, build_chat_prompt
from internvl.inputs.prompt import ImageTokenIds, frame_lines
from internvl.inputs.template import THINKING_SYSTEM_PROMPT, get_template
from internvl.inputs.video import load_video
from tests.inputs_fixtures import (
    OFFICIAL_IMAGES,
    hf_got_ocr2_processor,
    make_image,
    reference_grid,
    reference_pixel_values,
    write_clip,
)

SYS = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


def official_chat_prompt(question, history, num_patches_list, system=SYS, num_image_token=256):
    """What the official `chat()` feeds the tokenizer, as docs/prompts.md describes it (internvl2_5)."""
    if history is None and len(num_patches_list) > 0 and "<image>" not in question:
        question = "<image>\n" + question
    query = "<|im_start|>system\n" + system + "<|im_end|>\n"
    for old_question, old_answer in history or []:
        query += "<|im_start|>user\n" + old_question + "<|im_end|>\n"
        query += "<|im_start|>assistant\n" + old_answer + "<|im_end|>\n"
    query += "<|im_start|>user\n" + question + "<|im_end|>\n" + "<|im_start|>assistant\n"
    for num_patches in num_patches_list:
        query = query.replace("<image>", "<img>" + "<IMG_CONTEXT>" * (num_image_token * num_patches) + "</img>", 1)
    return query


def user(content):
    return {"role": "user", "content": content}


def assistant(content):
    return {"role": "assistant", "content": content}


def image_part(image, **options):
    return {"type": "image", "image": image, **options}


def video_part(video, **options):
    return {"type": "video", "video": video, **options}


def reference_tiles(image):
    cols, rows = reference_grid(image.width, image.height, 1, 12)
    return cols * rows + (cols * rows > 1)


@pytest.fixture(scope="module")
def images():
    return [make_image(700, 340, seed=1), make_image(500, 460, seed=2), make_image(896, 448, seed=3)]


@pytest.fixture()
def processor(qwen2_tokenizer):
    return Processor(qwen2_tokenizer)


def test_multi_image_multi_turn_matches_official_recipe(processor, qwen2_tokenizer, images):
    q1, a1 = "Image-1: <image>\nImage-2: <image>\nWhat differs?", "The colours."
    q2 = "And this one: <image>?"
    out = processor([user(q1), assistant(a1), user(q2)], images=images)
    tiles = [reference_tiles(image) for image in images]
    assert tiles == [3, 1, 3]
    expected_prompt = official_chat_prompt(q2, [(q1, a1)], tiles)
    assert out.prompt == expected_prompt
    assert out.input_ids.tolist() == qwen2_tokenizer.encode(expected_prompt)
    assert out.tiles_per_image == tiles
    assert torch.equal(out.pixel_values, torch.cat([reference_pixel_values(image) for image in images]))
    assert out.attention_mask.shape == out.input_ids.shape and bool(out.attention_mask.all())

    ids = out.input_ids.tolist()
    assert ids[:3] == [151644, 8948, 198]  # <|im_start|> system \n
    assert ids[-3:] == [151644, 77091, 198]  # <|im_start|> assistant \n
    assert ids.count(151667) == 256 * 7  # <IMG_CONTEXT>
    assert ids.count(151665) == ids.count(151666) == 3  # <img>, </img>
    assert ids.count(151645) == 4  # <|im_end|>: system, q1, a1, q2
    assert processor.image_ids == ImageTokenIds(start=151665, context=151667, end=151666)
    assert processor.stop_token_id == 151645


def test_official_fixture_images(processor):
    """The fixture pair through the processor gives the official pixel values and 3 + 1 tiles."""
    from safetensors.torch import load_file

    out = processor([user("Compare.")], images=[OFFICIAL_IMAGES / "image1.png", OFFICIAL_IMAGES / "image2.png"])
    official = load_file(OFFICIAL_IMAGES / "pixel_values.safetensors")["two_images.pixel_values"]
    assert out.tiles_per_image == [3, 1]
    assert (out.pixel_values - official).abs().max().item() <= 1e-6
    assert out.prompt == official_chat_prompt("Image-1: <image>\nImage-2: <image>\nCompare.", None, [3, 1])


def test_single_image_gets_image_line_prepended(processor, qwen2_tokenizer, images):
    out = processor([user("Describe the image.")], images=images[:1])
    expected = official_chat_prompt("Describe the image.", None, [3])
    assert "<|im_start|>user\n<img>" in expected
    assert out.prompt == expected and out.input_ids.tolist() == qwen2_tokenizer.encode(expected)


def test_several_images_without_placeholders_are_labelled(qwen2_tokenizer, images):
    messages = [user("Compare.")]
    labelled = Processor(qwen2_tokenizer)(messages, images=images[:2])
    assert labelled.prompt == official_chat_prompt("Image-1: <image>\nImage-2: <image>\nCompare.", None, [3, 1])
    plain = Processor(qwen2_tokenizer, label_images=False)(messages, images=images[:2])
    assert plain.prompt == official_chat_prompt("<image>\n<image>\nCompare.", None, [3, 1])


def test_interleaved_parts(processor, qwen2_tokenizer, images):
    out = processor(
        [
            user([image_part(images[0]), image_part(images[1]), {"type": "text", "text": "What differs?"}]),
            assistant([{"type": "text", "text": "The colours."}]),
            user([image_part(images[2]), "And this one?"]),
        ]
    )
    q1 = "Image-1: <image>\nImage-2: <image>\nWhat differs?"
    expected = official_chat_prompt("Image-3: <image>\nAnd this one?", [(q1, "The colours.")], [3, 1, 3])
    assert out.prompt == expected and out.input_ids.tolist() == qwen2_tokenizer.encode(expected)
    assert out.tiles_per_image == [3, 1, 3]


def test_build_chat_prompt_is_the_official_recipe(processor, images):
    template = get_template("internvl2_5")
    q1, a1, q2 = "Image-1: <image>\nImage-2: <image>\nWhat differs?", "The colours.", "And this one: <image>?"
    prompt = build_chat_prompt(q2, template=template, tiles_per_image=[3, 1, 3], history=[(q1, a1)])
    assert prompt == official_chat_prompt(q2, [(q1, a1)], [3, 1, 3])
    # history=None prepends <image>\n; an empty history does not (official behaviour).
    assert build_chat_prompt("Hi", template=template, tiles_per_image=[2]) == official_chat_prompt("Hi", None, [2])
    with pytest.raises(InputError, match="0 <image> placeholder"):
        build_chat_prompt("Hi", template=template, tiles_per_image=[2], history=[])
    assert build_chat_prompt("Hi", template=template) == official_chat_prompt("Hi", None, [])
    # The processor renders the same conversation identically.
    assert processor([user(q1), assistant(a1), user(q2)], images=images).prompt == prompt


def test_text_only(processor, qwen2_tokenizer):
    out = processor([user("Hello")])
    assert out.pixel_values is None and out.tiles_per_image == []
    assert out.input_ids.tolist() == qwen2_tokenizer.encode(official_chat_prompt("Hello", None, []))


def test_video_parts_and_placeholders(tmp_path, processor, qwen2_tokenizer):
    clip = write_clip(tmp_path / "clip.avi")
    frames = load_video(clip, num_segments=4)
    expected = official_chat_prompt(frame_lines(4) + "What happens?", None, [1] * 4)
    assert expected.count("Frame-4: <img>") == 1

    as_part = processor([user([video_part(clip, num_frames=4), "What happens?"])])
    assert as_part.prompt == expected and as_part.input_ids.tolist() == qwen2_tokenizer.encode(expected)
    assert as_part.tiles_per_image == [1, 1, 1, 1]
    assert torch.equal(as_part.pixel_values, frames.pixel_values)

    four_frames = Processor(qwen2_tokenizer, num_frames=4)
    assert four_frames([user("<video>\nWhat happens?")], videos=[clip]).prompt == expected
    assert four_frames([user("What happens?")], videos=[clip]).prompt == expected  # prepended


def test_image_and_video_interleaved(tmp_path, processor, images):
    clip = write_clip(tmp_path / "clip.avi")
    out = processor([user(["Look: ", image_part(images[1]), video_part(clip, num_frames=2), "Same scene?"])])
    expected = official_chat_prompt("Look: <image>\nFrame-1: <image>\nFrame-2: <image>\nSame scene?", None, [1, 1, 1])
    assert out.prompt == expected and out.tiles_per_image == [1, 1, 1]
    assert out.pixel_values.shape == (3, 3, 448, 448)


def test_tile_budgets(qwen2_tokenizer, images):
    messages = [user("Image-1: <image>\nImage-2: <image>\nImage-3: <image>\nCompare.")]
    assert Processor(qwen2_tokenizer)(messages, images=images).tiles_per_image == [3, 1, 3]
    big = make_image(1600, 1200)  # 4x3 grid with 12 tiles
    assert Processor(qwen2_tokenizer, max_tiles=6)([user("x")], images=[big]).tiles_per_image == [7]
    per_image = Processor(qwen2_tokenizer)(messages, images=[big, big, big], max_tiles=[1, 4, 12])
    assert per_image.tiles_per_image == [1, 5, 13]
    split = Processor(qwen2_tokenizer, split_tiles_across_images=True)(messages, images=[big, big, big])
    assert split.tiles_per_image == [5, 5, 5]  # max(1, 12 // 3) = 4 tiles + thumbnail each
    wide = make_image(1600, 800)  # 2x1 with max_tiles=2
    part = Processor(qwen2_tokenizer)([user([image_part(wide, max_tiles=2), "x"])])
    assert part.tiles_per_image == [3]
    with pytest.raises(InputError, match="max_tiles has 2 entries for 3 image"):
        Processor(qwen2_tokenizer)(messages, images=images, max_tiles=[1, 2])


def test_system_message_sources(qwen2_tokenizer):
    from_config = Processor(qwen2_tokenizer, system_message="Be brief.")([user("Hi")])
    assert from_config.prompt == official_chat_prompt("Hi", None, [], system="Be brief.")
    from_messages = Processor(qwen2_tokenizer)([{"role": "system", "content": "Be kind."}, user("Hi")])
    assert from_messages.prompt == official_chat_prompt("Hi", None, [], system="Be kind.")
    thinking = Processor(qwen2_tokenizer, thinking=True)([user("Hi")])
    assert thinking.prompt == official_chat_prompt("Hi", None, [], system=THINKING_SYSTEM_PROMPT)


def test_other_template_and_no_generation_prompt(qwen2_tokenizer):
    p = Processor(qwen2_tokenizer, template="Hermes-2")
    out = p([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], add_generation_prompt=False)
    assert out.prompt.endswith("<|im_start|>user\nHi<|im_end|><|im_start|>assistant\nHello<|im_end|>")
    assert p.stop_token_id == 151645


def test_placeholder_count_mismatch(processor, images):
    with pytest.raises(InputError, match=r"2 <image> placeholder\(s\) but 1 image\(s\)"):
        processor([{"role": "user", "content": "<image> and <image>"}], images=images[:1])
    with pytest.raises(InputError, match=r"1 <image> placeholder\(s\) but 2 image\(s\)"):
        processor([{"role": "user", "content": "<image> only"}], images=images[:2])
    with pytest.raises(InputError, match=r"1 <image> placeholder\(s\) but 0 image\(s\)"):
        processor([{"role": "user", "content": "<image> without images"}])
    with pytest.raises(InputError, match=r"1 <video> placeholder\(s\) but 0 video\(s\)"):
        processor([{"role": "user", "content": "<video>\nWhat happens?"}])


def test_bad_messages(processor, images):
    cases = [
        ([], "non-empty list"),
        ({"role": "user", "content": "x"}, "non-empty list"),
        ([{"role": "user"}], "message 0 must be a dict"),
        ([{"role": "bot", "content": "x"}], "unknown role 'bot'"),
        ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}], "system message may only come first"),
        ([{"role": "assistant", "content": [{"type": "image", "image": images[0]}]}], "only appear in user messages"),
        ([{"role": "system", "content": "y"}], "no user message"),
        ([{"role": "user", "content": ""}], "message 0 is empty"),
        ([{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}]}], "cannot use content part"),
        ([{"role": "user", "content": "say <IMG_CONTEXT>"}], "must not contain"),
        ([{"role": "user", "content": "a <img> tag"}], "must not contain"),
    ]
    for messages, message in cases:
        with pytest.raises(InputError, match=message):
            processor(messages)


def test_bad_image_reports_the_file(processor, tmp_path):
    with pytest.raises(InputError, match=r"missing\.png: no such image file"):
        processor([{"role": "user", "content": "x"}], images=[tmp_path / "missing.png"])


def test_tokenizer_without_internvl_tokens():
    class Plain:
        def convert_tokens_to_ids(self, token):
            return None

        def encode(self, text, add_special_tokens=True):
            return [1, 2, 3]

    with pytest.raises(ConfigError, match="no single token for '<img>'"):
        Processor(Plain())


def test_matches_transformers_internvl_processor(qwen2_tokenizer, images):
    """HF's `InternVLProcessor` (with its PIL image processor) on the same prompt: same ids, same
    pixels. It needs torchvision (for its video processor), so it is skipped without it."""
    try:
        from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

        video_processor = InternVLVideoProcessor()
    except Exception as e:
        pytest.skip(f"transformers' InternVLProcessor needs torchvision here: {type(e).__name__}: {e}")
    from transformers import InternVLProcessor, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=qwen2_tokenizer.backend_tokenizer,
        extra_special_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    image_processor = hf_got_ocr2_processor(
        "pil", size={"height": 448, "width": 448}, crop_to_patches=True, max_patches=12,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )  # fmt: skip
    hf = InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor)
    question = "Image-1: <image>\nImage-2: <image>\nCompare."
    text = official_chat_prompt(question, None, []).replace("<image>", "<IMG_CONTEXT>")
    theirs = hf(images=images[:2], text=text, return_tensors="pt")
    ours = Processor(qwen2_tokenizer)([{"role": "user", "content": question}], images=images[:2])
    assert theirs["input_ids"][0].tolist() == ours.input_ids.tolist()
    assert (theirs["pixel_values"] - ours.pixel_values).abs().max().item() <= 1e-6
