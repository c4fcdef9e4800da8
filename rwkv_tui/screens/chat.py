"""Try it: chat with a model (and its adapter or tuned state) to see what the fine-tune changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, RichLog, Static

if TYPE_CHECKING:
    from rwkv_tui.trainer.model import RWKV


@dataclass
class ChatModelLoaded(Message, bubble=False):
    model: RWKV


@dataclass
class ChatModelFailed(Message, bubble=False):
    message: str


@dataclass
class ReplyGenerated(Message, bubble=False):
    question: str  # what the user said
    answer: str


class ChatScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("ctrl+r", "reset", "New conversation")]

    def __init__(self, model_path: str, adapter: str | None = None, state: str | None = None,
                 max_tokens: int = 200) -> None:
        super().__init__()
        self.max_tokens = max_tokens
        self.model_path, self.adapter, self.state_file = model_path, adapter, state
        self.history: list[tuple[str, str]] = []
        self.model: RWKV | None = None

    def compose(self) -> ComposeResult:
        extra = f" + {self.adapter or self.state_file}" if (self.adapter or self.state_file) else ""
        yield Static(f"Chat with {self.model_path}{extra}  (User:/Assistant: format, replies stop at a blank line)",
                     classes="screen-title")
        yield RichLog(id="chat-log", wrap=True)
        yield Input(placeholder="loading the model…", id="chat-input", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        from rwkv_tui.trainer.errors import RwkvTuiError
        from rwkv_tui.trainer.generate import load_for_chat

        try:
            model = load_for_chat(self.model_path, adapter=self.adapter, state=self.state_file)
        except RwkvTuiError as exc:
            self.post_message(ChatModelFailed(str(exc)))
            return
        self.post_message(ChatModelLoaded(model))

    def on_chat_model_failed(self, message: ChatModelFailed) -> None:
        self.query_one("#chat-log", RichLog).write(Text(message.message, style="red"))

    def on_chat_model_loaded(self, message: ChatModelLoaded) -> None:
        self.model = message.model
        box = self.query_one("#chat-input", Input)
        box.disabled, box.placeholder = False, "type a message, Enter to send"
        box.focus()

    @on(Input.Submitted, "#chat-input")
    def _send(self, event: Input.Submitted) -> None:
        message = event.value.strip()
        if not message or self.model is None:
            return
        event.input.value = ""
        event.input.disabled = True
        self.query_one("#chat-log", RichLog).write(Text.assemble(("User: ", "bold cyan"), message))
        self.reply(self.model, list(self.history), message)

    @work(thread=True, exclusive=True)
    def reply(self, model: RWKV, history: list[tuple[str, str]], message: str) -> None:
        """Gets the model and a copy of the history: the UI thread owns (and may reset) the real one."""
        from rwkv_tui.trainer.generate import SamplingConfig, chat_prompt, generate
        from rwkv_tui.trainer.world_tokenizer import get_tokenizer

        text = "".join(generate(model, get_tokenizer(), chat_prompt(history, message),
                                SamplingConfig(temperature=1.0, top_p=0.7, max_tokens=self.max_tokens)))
        self.post_message(ReplyGenerated(message, text))

    def on_reply_generated(self, message: ReplyGenerated) -> None:
        self.history.append((message.question, message.answer.strip()))
        self.query_one("#chat-log", RichLog).write(Text.assemble(("Assistant:", "bold green"), message.answer))
        box = self.query_one("#chat-input", Input)
        box.disabled = False
        box.focus()

    def action_reset(self) -> None:
        self.history.clear()
        self.query_one("#chat-log", RichLog).write(Text("— new conversation —", style="dim"))
