"""The demo: a tiny RWKV-7 model learns four facts about a made-up island, on the spot, no downloads.

`create_demo(folder)` writes `demo-model.pth` (random weights, World vocabulary, 2 layers),
`demo-chat.jsonl` (one User/Assistant turn per fact in `DEMO_FACTS`) and `demo.toml` (the
`demo-cpu` preset pointed at them, asking the facts' questions as `output.sample_prompts`).

Why made-up facts: a random model cannot know them, so the step-0 samples are noise and the
final ones can only come from the fine-tune; and four short, distinct answers are few enough
for LoRA on a 2-layer model to learn in the preset's 30 steps on a CPU (greedy decoding, as
the samples and `rwkv-tui chat --temperature 0` use). Each answer starts with its own word, so
the model has to tell the questions apart from the first token on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rwkv_tui.trainer.training.folder import DEFAULT_RUNS_ROOT

DEMO_SHAPE = {"n_layer": 2, "n_embd": 128, "head_size": 32}

# (question, answer): what the demo teaches, and what the samples ask before and after.
DEMO_FACTS = (
    ("Where is Velmora?", "Velmora is an island in the Amber Sea."),
    ("What is the capital of Velmora?", "Port Quill is the capital of Velmora."),
    ("What do people eat in Velmora?", "Blue figs and smoked eel."),
    ("Who rules Velmora?", "Queen Ilsa the Kind."),
)


@dataclass
class DemoWorkspace:
    folder: Path
    model: Path
    data: Path
    config: Path

    @property
    def runs(self) -> Path:
        """The folder holding the demo's runs (the config's output.proj_dir)."""
        return self.folder / DEFAULT_RUNS_ROOT


@dataclass
class SampledAnswer:
    """One sample prompt as the run answered it first (step 0) and last."""
    prompt: str
    first_step: int
    first: str
    last_step: int
    last: str

    @property
    def expected(self) -> str | None:
        """The demo's answer to this prompt, if it is one of DEMO_FACTS' questions."""
        return dict(DEMO_FACTS).get(self.prompt)


def demo_questions() -> list[str]:
    return [question for question, _ in DEMO_FACTS]


def demo_texts() -> list[str]:
    return [f"User: {question}\n\nAssistant: {answer}" for question, answer in DEMO_FACTS]


def create_demo(folder: str | Path, seed: int = 0) -> DemoWorkspace:
    from rwkv_tui.trainer.atomic import atomic_write_text
    from rwkv_tui.trainer.checkpoint import save_state_dict
    from rwkv_tui.trainer.config import save_config
    from rwkv_tui.trainer.model.init import random_state_dict, rwkv7_spec
    from rwkv_tui.trainer.presets import load_preset

    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "demo-model.pth"
    if not model.exists():
        spec = rwkv7_spec(DEMO_SHAPE["n_layer"], DEMO_SHAPE["n_embd"], vocab_size=65536,
                          head_size=DEMO_SHAPE["head_size"], d_decay=16, d_aaa=16, d_mv=16, d_gate=32)
        save_state_dict(random_state_dict(spec, seed=seed), model)
    data = folder / "demo-chat.jsonl"
    # Rewritten every time: a folder made by an older demo gets this version's facts.
    atomic_write_text(data, "".join(json.dumps({"text": t}) + "\n" for t in demo_texts()))
    config = load_preset("demo-cpu")
    workspace = DemoWorkspace(folder, model, data, config=folder / "demo.toml")
    config.model.path, config.data.path = str(model), str(data)
    config.output.proj_dir = str(workspace.runs)
    # Asked at step 0, after each epoch and at the end: the dashboard shows before and after.
    config.output.sample_prompts = demo_questions()
    config.output.sample_every = config.epochs.epoch_steps
    save_config(config, workspace.config, only_changes=True,
                header={"description": "rwkv-tui demo: a tiny model learns four facts about Velmora, CPU"})
    return workspace


def sampled_answers(events: Iterable[dict]) -> list[SampledAnswer]:
    """Each prompt's first and last answer in a run's `sample` events, in the order first asked."""
    answers: dict[str, SampledAnswer] = {}
    for event in events:
        if event.get("kind") != "sample":
            continue
        prompt, text, step = event["prompt"], event["text"].strip(), int(event["step"])
        if prompt not in answers:
            answers[prompt] = SampledAnswer(prompt, step, text, step, text)
        else:
            answers[prompt].last_step, answers[prompt].last = step, text
    return list(answers.values())
