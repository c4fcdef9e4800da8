"""`rwkv-tui chat MODEL [--adapter A | --state S]`: talk to a model to see what a fine-tune changed."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat", help="chat with a model (optionally with an adapter or a tuned state)",
        description="Generate with our model in RNN mode using the User:/Assistant: format; a reply stops at "
                    "a blank line. Type /reset to clear the conversation, /quit (or Ctrl-D) to leave.")
    parser.add_argument("model", help="base (or merged) model .pth")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--adapter", help="an adapter file to merge in memory")
    group.add_argument("--state", help="a state file to mount (state tuning output)")
    parser.add_argument("--lora-alpha", type=float, help="alpha for adapter files that do not record it")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None, help="fixed sampling seed (reproducible replies)")
    parser.add_argument("--system", help="a System: line to start the conversation")
    parser.add_argument("--prompt", action="append", help="send this message and print the reply (repeatable); "
                                                          "without it, chat interactively")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rwkv_tui.trainer.generate import SamplingConfig, chat_prompt, generate, load_for_chat
    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    model = load_for_chat(args.model, adapter=args.adapter, state=args.state, lora_alpha=args.lora_alpha)
    tokenizer = get_tokenizer()
    sampling = SamplingConfig(args.temperature, args.top_p, args.max_tokens, seed=args.seed)
    history: list[tuple[str, str]] = []
    messages = iter(args.prompt) if args.prompt else None
    while True:
        if messages is not None:
            message = next(messages, None)
            if message is None:
                return 0
            print(f"User: {message}")
        else:
            try:
                message = input("User: ")
            except EOFError:
                print()
                return 0
            if message.strip() in ("/quit", "/exit"):
                return 0
            if message.strip() == "/reset":
                history.clear()
                continue
        print("Assistant:", end="", flush=True)
        reply = ""
        for piece in generate(model, tokenizer, chat_prompt(history, message, args.system), sampling):
            reply += piece
            sys.stdout.write(piece)
            sys.stdout.flush()
        print("\n")
        history.append((message, reply.strip()))
