"""Try it: chat with a model (and its adapter or tuned state) to see what the fine-tune changed."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, RichLog, Static


class ChatScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("ctrl+r", "reset", "New conversation")]

    def __init__(self, model_path: str, adapter: str | None = None, state: str | None = None,
                 max_tokens: int = 200) -> None:
        super().__init__()
        self.max_tokens = max_tokens
        self.model_path, self.adapter, self.state_file = model_path, adapter, state
        self.history: list[tuple[str, str]] = []
        self.model = None

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
            self.model = load_for_chat(self.model_path, adapter=self.adapter, state=self.state_file)
        except RwkvTuiError as exc:
            self.app.call_from_thread(self.query_one("#chat-log", RichLog).write, Text(str(exc), style="red"))
            return
        self.app.call_from_thread(self._ready)

    def _ready(self) -> None:
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
        self.reply(message)

    @work(thread=True, exclusive=True)
    def reply(self, message: str) -> None:
        from rwkv_tui.trainer.generate import SamplingConfig, chat_prompt, generate
        from rwkv_tui.trainer.world_tokenizer import get_tokenizer

        text = "".join(generate(self.model, get_tokenizer(), chat_prompt(self.history, message),
                                SamplingConfig(temperature=1.0, top_p=0.7, max_tokens=self.max_tokens)))
        self.history.append((message, text.strip()))
        self.app.call_from_thread(self._show_reply, text)

    def _show_reply(self, text: str) -> None:
        self.query_one("#chat-log", RichLog).write(Text.assemble(("Assistant:", "bold green"), text))
        box = self.query_one("#chat-input", Input)
        box.disabled = False
        box.focus()

    def action_reset(self) -> None:
        self.history.clear()
        self.query_one("#chat-log", RichLog).write(Text("— new conversation —", style="dim"))
