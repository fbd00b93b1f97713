"""Copies of the shipped configs in a temporary directory, for tests that edit them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"

EditConfig = Callable[[str, str], Path]


@pytest.fixture
def edited_config(tmp_path: Path) -> EditConfig:
    """``edited_config(old, new)``: config/router.yaml with ``old`` replaced by ``new`` (which must occur)."""

    def edit(old: str, new: str) -> Path:
        text = (CONFIG / "router.yaml").read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in config/router.yaml"
        shutil.copy(CONFIG / "tasks.yaml", tmp_path / "tasks.yaml")
        (tmp_path / "models").symlink_to(CONFIG / "models", target_is_directory=True)
        path = tmp_path / "router.yaml"
        path.write_text(text.replace(old, new), encoding="utf-8")
        return path

    return edit


RULES = """\
  - name: pii-stays-self-hosted
    when: {pii: true}
    tier: mid
  - name: escalate-hard-tasks
    when: {task: [reasoning, math, code]}
    tier: flagship
  - name: escalate-complex
    when: {complexity_gte: 0.75}
    tier: flagship
  - name: default-mid
    tier: mid
"""


def write_config(path: Path, rules: str = RULES, ledger: Path | None = None, *, model: bool = False) -> Path:
    """A two-tier config (mid 0.05/0.20, flagship 2/8 USD per Mtok) with the given rules; ``model``
    adds the shipped classifier model (rules on escalation or confidence need it)."""
    classifier = f"vocabulary: {CONFIG / 'tasks.yaml'}" + (f", model: {CONFIG / 'models/routing-model.npz'}" if model else "")
    path.write_text(f"""\
backends:
  mid: {{tier: mid, base_url: "http://127.0.0.1:9/v1", model: m, context_window: 32768, self_hosted: true,
         price: {{input: 0.05, output: 0.20}}}}
  flagship: {{tier: flagship, base_url: "http://127.0.0.1:9/v1", model: f, context_window: 200000,
              price: {{input: 2.0, output: 8.0}}}}
aliases: {{gpt-4o: flagship}}
classifier: {{{classifier}}}
policy: {{ledger: {{path: {ledger or path.parent / "ledger.sqlite3"}}}}}
rules:
{rules}""")
    return path
