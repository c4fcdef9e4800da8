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
    from rwkv_tui.trainer.chat import ChatSession, Turn


@dataclass
class ChatModelLoaded(Message, bubble=False):
    sessions: list[ChatSession]  # one, or base and tuned with --compare


@dataclass
class ChatModelFailed(Message, bubble=False):
    message: str


@dataclass
class ReplyGenerated(Message, bubble=False):
    turns: list[Turn]  # one per session, in order
    conversation: int  # which conversation they answer (a reset meanwhile makes them stale)


class ChatScreen(Screen):
    """One model, or (compare=True) the base and the tuned model answering each message, as
    two labelled replies. Each conversation is carried in the models' states (trainer/chat.py);
    the model work runs in thread workers that only post Messages."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("ctrl+r", "reset", "New conversation"),
                Binding("ctrl+b", "toggle_compare", "Base side by side")]

    def __init__(self, model_path: str, adapter: str | None = None, state: str | None = None,
                 max_tokens: int = 200, compare: bool = False, device: str = "auto") -> None:
        super().__init__()
        self.max_tokens = max_tokens
        self.model_path, self.adapter, self.state_file = model_path, adapter, state
        self.compare, self.device = compare, device
        self.history: list[tuple[str, str]] = []  # (message, the tuned model's reply)
        self.sessions: list[ChatSession] = []
        self.conversation = 0

    @property
    def model(self):
        """The (tuned) model once loaded, else None."""
        return self.sessions[-1].model if self.sessions else None

    def title_text(self) -> str:
        extra = f" + {self.adapter or self.state_file}" if (self.adapter or self.state_file) else ""
        mode = ", base and tuned side by side" if self.compare else ""
        return f"Chat with {self.model_path}{extra}  (User:/Assistant: format, replies stop at a blank line{mode})"

    def compose(self) -> ComposeResult:
        yield Static(self.title_text(), classes="screen-title", id="chat-title")
        yield RichLog(id="chat-log", wrap=True)
        yield Input(placeholder="loading the model…", id="chat-input", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        from rwkv_tui.trainer.chat import ChatSession, load_chat_model, load_contenders
        from rwkv_tui.trainer.errors import RwkvTuiError
        from rwkv_tui.trainer.generate import SamplingConfig
        from rwkv_tui.trainer.world_tokenizer import get_tokenizer

        sampling = SamplingConfig(temperature=1.0, top_p=0.7, max_tokens=self.max_tokens)
        try:
            if self.compare:
                contenders = load_contenders(self.model_path, adapter=self.adapter, state=self.state_file,
                                             device=self.device)
                sessions = contenders.sessions(get_tokenizer(), sampling)
            else:
                model = load_chat_model(self.model_path, adapter=self.adapter, state=self.state_file,
                                        device=self.device)
                sessions = [ChatSession(model, get_tokenizer(), sampling)]
        except RwkvTuiError as exc:
            self.post_message(ChatModelFailed(str(exc)))
            return
        self.post_message(ChatModelLoaded(sessions))

    def on_chat_model_failed(self, message: ChatModelFailed) -> None:
        self.query_one("#chat-log", RichLog).write(Text(message.message, style="red"))

    def on_chat_model_loaded(self, message: ChatModelLoaded) -> None:
        self.sessions = message.sessions
        box = self.query_one("#chat-input", Input)
        box.disabled, box.placeholder = False, "type a message, Enter to send"
        box.focus()

    @on(Input.Submitted, "#chat-input")
    def _send(self, event: Input.Submitted) -> None:
        message = event.value.strip()
        if not message or not self.sessions:
            return
        event.input.value = ""
        if message == "/reset":
            self.action_reset()
            return
        event.input.disabled = True
        self.query_one("#chat-log", RichLog).write(Text.assemble(("User: ", "bold cyan"), message))
        self.reply(list(self.sessions), message, self.conversation)

    @work(thread=True, exclusive=True)
    def reply(self, sessions: list[ChatSession], message: str, conversation: int) -> None:
        """Answers from the sessions' carried states without changing them: the UI thread
        takes the turns (on_reply_generated) and may have reset the conversation meanwhile."""
        turns = [session.answer(message) for session in sessions]
        self.post_message(ReplyGenerated(turns, conversation))

    def on_reply_generated(self, message: ReplyGenerated) -> None:
        log = self.query_one("#chat-log", RichLog)
        for session, turn in zip(self.sessions, message.turns):
            label = f"Assistant ({session.label}):" if session.label else "Assistant:"
            log.write(Text.assemble((label, "bold green"), turn.reply))
            if message.conversation == self.conversation:
                session.accept(turn)
        if message.conversation == self.conversation:
            self.history.append((message.turns[-1].message, message.turns[-1].reply.strip()))
        box = self.query_one("#chat-input", Input)
        box.disabled = False
        box.focus()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # Comparing needs something tuned: without an adapter or a state the key is hidden.
        return bool(self.adapter or self.state_file) if action == "toggle_compare" else True

    def action_toggle_compare(self) -> None:
        """Switch between the tuned model alone and base + tuned: loads again, new conversation."""
        if not self.sessions:
            return  # still loading
        self.compare = not self.compare
        self.action_reset()
        self.sessions = []
        self.query_one("#chat-title", Static).update(self.title_text())
        box = self.query_one("#chat-input", Input)
        box.disabled, box.placeholder = True, "loading the model…"
        self.load()

    def action_reset(self) -> None:
        self.conversation += 1
        for session in self.sessions:
            session.reset()
        self.history.clear()
        self.query_one("#chat-log", RichLog).write(Text("— new conversation —", style="dim"))
