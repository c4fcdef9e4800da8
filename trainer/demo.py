"""The demo: a tiny RWKV-7 model and a small chat dataset, made on the spot, no downloads.

`create_demo(folder)` writes `demo-model.pth` (random weights, World vocabulary, 2 layers),
`demo-chat.jsonl` (a few dozen short conversations) and `demo.toml` (the `demo-cpu`
preset pointed at them), so the whole flow runs on a CPU in about a minute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rwkv_tui.trainer.training.folder import DEFAULT_RUNS_ROOT

DEMO_SHAPE = {"n_layer": 2, "n_embd": 128, "head_size": 32}

_FACTS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What colour is the sky?", "The sky is blue on a clear day."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What do bees make?", "Bees make honey."),
    ("What is water made of?", "Water is made of hydrogen and oxygen."),
    ("Which planet is the largest?", "Jupiter is the largest planet."),
    ("What is RWKV?", "RWKV is an RNN language model that trains like a transformer."),
    ("Say hello.", "Hello! Nice to meet you."),
]


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


def demo_texts() -> list[str]:
    texts = [f"User: {q}\n\nAssistant: {a}" for q, a in _FACTS]
    texts += [f"User: What is {a} plus {b}?\n\nAssistant: {a} plus {b} is {a + b}." for a in range(1, 6)
              for b in range(1, 5)]
    texts.append("Instruction: Classify the topic.\n\nInput: RWKV-7 was released.\n\nResponse: Technology")
    return texts


def create_demo(folder: str | Path, seed: int = 0) -> DemoWorkspace:
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
    if not data.exists():
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in demo_texts()), encoding="utf-8")
    config = load_preset("demo-cpu")
    workspace = DemoWorkspace(folder, model, data, config=folder / "demo.toml")
    config.model.path, config.data.path = str(model), str(data)
    config.output.proj_dir = str(workspace.runs)
    save_config(config, workspace.config, only_changes=True,
                header={"description": "rwkv-tui demo: tiny model, built-in chat data, CPU"})
    return workspace
