"""The `internvl` command line. Each subcommand is a thin wrapper over the Python API."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from internvl import threads
from internvl.config import dtype_by_name
from internvl.errors import InternVLError


def _convert(args: argparse.Namespace) -> int:
    from internvl.weights import convert_checkpoint

    convert_checkpoint(
        args.src, args.dst, layout=args.layout, dtype=dtype_by_name(args.dtype), overwrite=args.overwrite
    )
    print(f"wrote {args.layout} layout to {args.dst}", file=sys.stderr)
    return 0


def add_convert_command(subparsers: argparse._SubParsersAction) -> None:
    from internvl.weights import OVERWRITE_HELP

    p = subparsers.add_parser("convert", help="convert a checkpoint between the original and hf layouts")
    p.add_argument("src", help="checkpoint folder (either layout)")
    p.add_argument("dst", help="output folder (its config.json and weight files are replaced; nothing else)")
    p.add_argument("--layout", choices=["original", "hf"], required=True, help="layout to write")
    p.add_argument("--dtype", default=None, help="cast weights (float32, bfloat16, float16); default: keep")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(func=_convert)


def _chat(args: argparse.Namespace) -> int:
    import logging

    from internvl.chat import load
    from internvl.generate import GenerationConfig

    logging.basicConfig(level=logging.WARNING, format="internvl: %(message)s", stream=sys.stderr)
    generation = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    chat = load(
        args.model,
        dtype=dtype_by_name(args.dtype),
        device=args.device,
        max_tiles=args.max_tiles,
        system_message=args.system,
        thinking=args.thinking,
        generation=generation,
        quantize=args.quantize,
        v2pe_delta=args.v2pe_delta,
        visual_resolution=args.visual_resolution,
    )
    if args.question is not None:
        _answer(chat, args.question, args.image, args.video, args.stream)
        return 0
    return _interactive(chat, args)


def _answer(chat, question: str, images: list[str], videos: list[str], streaming: bool) -> None:  # type: ignore[no-untyped-def]
    if streaming:
        for piece in chat.stream(question, images=images, videos=videos):
            print(piece, end="", flush=True)
        print()
    else:
        print(chat.ask(question, images=images, videos=videos), flush=True)


def _interactive(chat, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    """A conversation on the terminal: the images of the command line go with the first question;
    `/image PATH` attaches one to the next question, `/reset` forgets the history, `/exit` ends."""
    from internvl.inputs.image import load_image

    session = chat.session()
    pending = list(args.image)
    print("internvl chat: type a question; /image PATH, /reset, /exit", file=sys.stderr)
    while True:
        try:
            line = input("> " if sys.stdin.isatty() else "").strip()
        except EOFError:
            return 0
        except UnicodeDecodeError as exc:  # bytes that are not text: say so, keep the conversation
            print(f"internvl: error: the line is not valid text ({exc.reason}); type it again", file=sys.stderr)
            continue
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            session.reset()
            continue
        if line.startswith("/image "):
            path = line.removeprefix("/image ").strip()
            try:  # checked now: a bad picture is refused alone, the ones attached before it stay
                load_image(path)
            except InternVLError as exc:
                print(f"internvl: error: {exc} (not attached; {len(pending)} image(s) still attached)", file=sys.stderr)
                continue
            pending.append(path)
            continue
        try:
            print(session.ask(line, images=pending), flush=True)
        except InternVLError as exc:
            print(f"internvl: error: {exc}", file=sys.stderr)
        pending = []


def add_resolution_option(parser: argparse.ArgumentParser) -> None:
    from internvl.model.flash import VISUAL_RESOLUTIONS

    parser.add_argument(
        "--visual-resolution",
        choices=VISUAL_RESOLUTIONS,
        default=None,
        help="Flash models: every tile full, compressed (4x fewer tokens), or as the router decides "
        "(default: router on Flash models, else full; docs/flash.md)",
    )


def add_chat_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("chat", help="ask a model about images and videos (interactive without a question)")
    p.add_argument("question", nargs="?", help="the question; omit it for an interactive conversation")
    p.add_argument("--model", default=None, help="checkpoint folder (either layout); default: the embedded nano model")
    p.add_argument("--image", action="append", default=[], help="an image file (repeat for several)")
    p.add_argument("--video", action="append", default=[], help="a video file (needs the [video] extra)")
    p.add_argument("--max-tiles", type=int, default=None, help="max tiles per image (default: the model config's)")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    p.add_argument("--system", default=None, help="system message (default: the model's)")
    p.add_argument("--thinking", action="store_true", help="InternVL3.5 thinking-mode system prompt")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the checkpoint's)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument(
        "--quantize", choices=["int8", "int4"], default=None, help="weight-only int8 or int4 (CPU) language model"
    )
    p.add_argument(
        "--v2pe-delta", type=float, default=None, help="V2PE step of image tokens, in (0, 1] (default: the config's)"
    )
    add_resolution_option(p)
    threads.add_option(p)
    p.set_defaults(func=_chat)


def _serve(args: argparse.Namespace) -> int:
    import logging
    import os
    from pathlib import Path

    from internvl.chat import load
    from internvl.errors import InputError

    try:
        from internvl.serve.engine import EngineSettings
        from internvl.serve.server import run_server
        from internvl.serve.settings import ServeSettings
    except ImportError as exc:
        raise InputError(f"serving needs the [serve] extra: pip install 'internvl[serve]' ({exc})") from exc

    logging.basicConfig(level=logging.INFO, format="internvl: %(message)s", stream=sys.stderr)
    settings = ServeSettings(
        host=args.host,
        port=args.port,
        model_name=args.served_model_name or (Path(args.model).name if args.model else "internvl-nano"),
        api_key=args.api_key if args.api_key is not None else os.environ.get("INTERNVL_API_KEY"),
        allow_url_fetch=args.allow_url_fetch,
        allowed_media_dir=args.allowed_media_dir,
        max_request_bytes=args.max_request_bytes,
        max_images=args.max_images,
        max_image_pixels=args.max_image_pixels,
        max_tokens=args.max_tokens,
        max_tiles=args.max_tiles_cap,
        shutdown_timeout_s=args.shutdown_timeout,
        web=not args.no_web,
    )
    settings.check()  # before the model loads: a bad flag is one line at once
    for flag, value, least in (("--max-batch", args.max_batch, 1), ("--max-queue", args.max_queue, 0)):
        if value < least:
            raise InputError(f"{flag} must be at least {least}, got {value}")
    if args.max_seq_len is not None and args.max_seq_len < 1:
        raise InputError(f"--max-seq-len must be at least 1 (or left out for the default), got {args.max_seq_len}")
    if args.max_tiles is not None and args.max_tiles < 1:
        raise InputError(f"--max-tiles must be at least 1, got {args.max_tiles}")
    chat = load(
        args.model,
        dtype=dtype_by_name(args.dtype),
        device=args.device,
        max_tiles=args.max_tiles,
        quantize=args.quantize,
        visual_resolution=args.visual_resolution,
    )
    reward_model = None
    if args.reward_model is not None:
        from internvl.reward import ProcessRewardModel

        reward_model = ProcessRewardModel.load(args.reward_model, dtype=dtype_by_name(args.dtype), device=args.device)
    engine = EngineSettings(max_batch=args.max_batch, max_queue=args.max_queue, max_seq_len=args.max_seq_len)
    run_server(chat, settings, engine, reward_model)
    return 0


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    from pathlib import Path

    p = subparsers.add_parser("serve", help="an OpenAI-compatible chat server (needs the [serve] extra)")
    p.add_argument("--model", default=None, help="checkpoint folder (either layout); default: the embedded nano model")
    p.add_argument("--served-model-name", default=None, help="the `model` id clients send (default: the folder name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or set INTERNVL_API_KEY)")
    p.add_argument("--allow-url-fetch", action="store_true", help="download http(s) image and video URLs")
    p.add_argument("--no-web", action="store_true", help="no chat page at / (the API only)")
    p.add_argument(
        "--reward-model", default=None, help="a PRM folder: requests may ask for best_of N answers (docs/prm.md)"
    )
    p.add_argument("--allowed-media-dir", type=Path, default=None, help="folder file:// URLs may read from")
    p.add_argument("--max-batch", type=int, default=16, help="answers decoded together")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for the batch; more get 503")
    p.add_argument(
        "--max-seq-len", type=int, default=None, help="prompt + answer tokens per answer (default: min(context, 4096))"
    )
    p.add_argument("--max-tokens", type=int, default=2048, help="cap on a request's max_tokens")
    p.add_argument("--max-images", type=int, default=16, help="cap on images and videos per request")
    p.add_argument("--max-image-pixels", type=int, default=4096 * 4096, help="cap on the pixels of one image")
    p.add_argument("--max-request-bytes", type=int, default=32 * 2**20, help="cap on a request body")
    p.add_argument("--max-tiles", type=int, default=None, help="default tiles per image (default: the model config's)")
    p.add_argument("--max-tiles-cap", type=int, default=12, help="cap on a request's max_tiles")
    p.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="seconds running answers get to finish on Ctrl-C"
    )
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: float32 on CPU)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument(
        "--quantize", choices=["int8", "int4"], default=None, help="weight-only int8 or int4 (CPU) language model"
    )
    add_resolution_option(p)
    threads.add_option(p)
    p.set_defaults(func=_serve)


def add_eval_command(subparsers: argparse._SubParsersAction) -> None:
    from internvl.eval.answerer import model_answerer
    from internvl.eval.cli import add_eval_commands

    add_eval_commands(subparsers, answerer_factory=model_answerer)


def add_world_command(subparsers: argparse._SubParsersAction) -> None:
    from internvl.data.world.cli import add_world_command as add

    add(subparsers)


def add_train_commands(subparsers: argparse._SubParsersAction) -> None:
    from internvl.train.cli import add_train_commands as add

    add(subparsers)


def add_data_command(subparsers: argparse._SubParsersAction) -> None:
    from internvl.data.mmpr import add_data_command as add

    add(subparsers)


def add_bench_command(subparsers: argparse._SubParsersAction) -> None:
    from internvl.bench import add_arguments, run

    p = subparsers.add_parser("bench", help="speed, ours vs transformers on the same random weights")
    add_arguments(p)
    p.set_defaults(func=run)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_convert_command,
    add_chat_command,
    add_serve_command,
    add_eval_command,
    add_world_command,
    add_train_commands,
    add_data_command,
    add_bench_command,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="internvl", description="Run, convert, train, evaluate and serve InternVL models."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    threads.apply(getattr(args, "threads", None))
    try:
        return int(args.func(args) or 0)
    except InternVLError as exc:
        print(f"internvl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("internvl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
