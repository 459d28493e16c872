"""`aitk chat`: the exported model (tuned by default, or base) or any OpenAI-compatible endpoint."""

from __future__ import annotations

import sys
import threading

from ..core.errors import AitkError
from .common import project_arg, warn_if_stale


def _open_engine(args):
    """(project or None for an endpoint, engine, label)."""
    from ..core.chat import RemoteChatEngine
    from ..core.project import find_project

    if args.endpoint:
        engine = RemoteChatEngine(args.endpoint, args.model, args.api_key)
        return None, engine, f"{engine.model} at {engine.base_url}"
    project = find_project(args.project)
    from ..core.publish import current_export

    from ..core.server import current_merged, open_engine

    onnx = current_export(project, args.precision)
    merged = current_merged(project, args.precision)
    if onnx is None and (args.base or merged is None):
        precision = args.precision or project.settings.inference.precision
        flag = f" --precision {precision}" if precision != project.settings.inference.precision else ""
        raise AitkError(f"{project.name} has no exported {precision} model yet",
                        f"run `aitk export -P {project.root}{flag}` first")
    if onnx is not None and (args.base or merged is None):  # a current merged export answers as tuned
        warn_if_stale(project, onnx.name)
    return project, open_engine(str(project.root), args.precision)[1], project.settings.model.id


def _write_answer(stream) -> None:
    """Print a reply as it streams, without the space its first token often starts with
    (`model> Glodan.`, not `model>  Glodan.`)."""
    started = False
    for piece in stream:
        if not started:
            piece = piece.lstrip()
            started = bool(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()


def cmd_chat(args) -> int:
    from ..core import generation

    project, engine, label = _open_engine(args)
    options = generation.resolve(project.settings.inference if project else None, generation.load_user_values(), {
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
        "top_k": args.top_k, "system_prompt": args.system})
    if args.endpoint:
        adapter = engine.model
    else:
        # The active adapter comes first (core/adapters.py); --adapter picks another the export carries.
        adapter = "base" if args.base else args.adapter or (engine.adapters[0] if engine.adapters else "base")
        from ..core.chat import resolve_adapter

        resolve_adapter(engine, adapter)  # an unknown name: one error now, not one per message
    if args.prompt is not None:
        _write_answer(engine.stream([{"role": "user", "content": args.prompt}], options, adapter=adapter))
        print()
        return 0
    history: list[dict] = []
    context = f", context {engine.context_length} tokens" if getattr(engine, "context_length", None) else ""
    print(f"chatting with {label} ({adapter}{context}); empty line or ctrl-d quits, ctrl-c stops a reply")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            break
        if not text:
            break
        history.append({"role": "user", "content": text})
        stop = threading.Event()
        sys.stdout.write("model> ")
        try:
            stream = engine.stream(history, options, adapter=adapter, stop=stop)
            _write_answer(stream)
        except KeyboardInterrupt:
            stop.set()
            sys.stdout.write(" [stopped]")
        except AitkError as e:  # this message failed; the conversation goes on without it
            history.pop()
            print(f"\nerror: {e}", file=sys.stderr)
            continue
        dropped = f", oldest {stream.dropped} turns left out to fit the context" if stream.dropped else ""
        print(f"   ({stream.tokens_per_second:.0f} tok/s{dropped})")
        history.append({"role": "assistant", "content": "".join(stream.text).strip()})
    return 0


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat with the exported model (tuned by default)")
    project_arg(p)
    p.add_argument("--prompt", "-p", help="one-shot: answer this and exit")
    p.add_argument("--base", action="store_true", help="the base model, without the adapter")
    p.add_argument("--adapter", help="another adapter the export carries, by name (default: the active one; "
                                     "`aitk adapters list`)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--precision", choices=["fp32", "int4", "fp16"])
    layers = "default: config.toml [chat], else the project's [inference]"
    p.add_argument("--max-new-tokens", type=int, help=f"longest answer ({layers}; capped by the context)")
    p.add_argument("--temperature", type=float, help=layers)
    p.add_argument("--top-p", type=float, help=layers)
    p.add_argument("--top-k", type=int, help=layers)
    p.add_argument("--endpoint", help="chat with an OpenAI-compatible endpoint instead (e.g. http://127.0.0.1:8000)")
    p.add_argument("--api-key", help="API key for --endpoint (default: $AITK_API_KEY)")
    p.add_argument("--model", help="model name at --endpoint, checked against its /v1/models (default: the "
                                   "first it lists)")
    p.set_defaults(func=cmd_chat)

