"""`rwkv-tui chat MODEL [--adapter A | --state S] [--compare] [--device D]`: talk to a model to see
what a fine-tune changed."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat", help="chat with a model (optionally with an adapter or a tuned state)",
        description="Generate with our model in RNN mode using the User:/Assistant: format; a reply stops at "
                    "a blank line. The conversation is carried in the model's state (the history is not "
                    "re-read each turn). Type /reset to clear the conversation, /quit (or Ctrl-D) to leave.")
    parser.add_argument("model", help="base (or merged) model .pth")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--adapter", help="an adapter file to merge in memory")
    group.add_argument("--state", help="a state file to mount (state tuning output)")
    parser.add_argument("--compare", action="store_true",
                        help="answer every message with the base model and the tuned one (--adapter or --state), "
                             "one after the other, labelled")
    parser.add_argument("--device", default="auto",
                        help="auto (a GPU when torch sees one), cpu, cuda or cuda:N; bf16 on a GPU, fp32 on the CPU")
    parser.add_argument("--lora-alpha", type=float, help="alpha for adapter files that do not record it")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None, help="fixed sampling seed (reproducible replies)")
    parser.add_argument("--system", help="a System: line to start the conversation")
    parser.add_argument("--prompt", action="append", help="send this message and print the reply (repeatable; "
                                                          "/reset works here too); without it, chat interactively")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from rwkv_tui.trainer.chat import ChatSession, load_chat_model, load_contenders
    from rwkv_tui.trainer.generate import SamplingConfig
    from rwkv_tui.trainer.world_tokenizer import get_tokenizer

    tokenizer = get_tokenizer()
    sampling = SamplingConfig(args.temperature, args.top_p, args.max_tokens, seed=args.seed)
    if args.compare:
        contenders = load_contenders(args.model, adapter=args.adapter, state=args.state,
                                     lora_alpha=args.lora_alpha, device=args.device)
        sessions = contenders.sessions(tokenizer, sampling, args.system)
    else:
        model = load_chat_model(args.model, adapter=args.adapter, state=args.state,
                                lora_alpha=args.lora_alpha, device=args.device)
        sessions = [ChatSession(model, tokenizer, sampling, args.system)]
    for message in _messages(args.prompt):
        if message == "/reset":
            for session in sessions:
                session.reset()
            print("— new conversation —\n")
            continue
        for session in sessions:
            print(f"Assistant ({session.label}):" if session.label else "Assistant:", end="", flush=True)
            session.say(message, on_piece=_write)
            print("\n")
    return 0


def _write(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _messages(prompts: list[str] | None):
    """The --prompt messages (echoed), or what the user types until /quit or Ctrl-D."""
    if prompts:
        for message in prompts:
            print(f"User: {message}")
            yield message.strip()
        return
    while True:
        try:
            message = input("User: ").strip()
        except EOFError:
            print()
            return
        if message in ("/quit", "/exit"):
            return
        if message:
            yield message
