"""The evaluation commands on a fresh demo run, as a user would type them: traffic through
``llm-router demo``, then ``replay``, ``calibrate`` and ``test`` on the ledger and config it used."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from tests.e2e.test_demo_command import DemoSetup, running_demo
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
PROMPTS = [
    "What are your opening hours?", "Summarise: the meeting moved to 3pm.", "Translate to French: good morning",
    "Prove that the square root of 2 is irrational, step by step.", "Write a Python function that reverses a list.",
    "My email is jane.doe@example.com, where is my parcel?", "hi there!", "What is the capital of Australia?",
]


def llm_router(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_replay_calibrate_and_test_on_a_demo_run(tmp_path: Path) -> None:
    # The shipped demo config, judging every mid answer instead of a fifth, so the run is deterministic.
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config/tasks.yaml", tmp_path / "config/tasks.yaml")
    (tmp_path / "config/models").symlink_to(REPO / "config/models", target_is_directory=True)
    demo = (REPO / "config/demo.yaml").read_text()
    assert "sample_rate: 0.2," in demo
    (tmp_path / "config/demo.yaml").write_text(demo.replace("sample_rate: 0.2,", "sample_rate: 1,"))
    setup = DemoSetup(tmp_path, tmp_path / "state", free_port(), free_port(), free_port())
    with running_demo(setup) as (url, proc):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="demo", max_retries=0)
        tiers = [client.chat.completions.with_raw_response.create(
            model="auto", max_tokens=8, messages=[{"role": "user", "content": p}]).headers["x-router-tier"] for p in PROMPTS]
        mid_without_pii = sum(t == "mid" for t in tiers) - 1

        def judged() -> float:
            metrics = httpx.get(f"{url}/metrics").text
            return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                       if line.startswith("llm_router_shadow_verdicts_total{"))

        deadline = time.monotonic() + 30
        while judged() < mid_without_pii and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # a graceful stop writes the ledger's last rows
        output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output.decode(errors="replace")

    with sqlite3.connect(setup.ledger) as db:
        verdicts = db.execute("SELECT verdict, simulated, rule FROM shadow_verdicts").fetchall()
    assert len(verdicts) == mid_without_pii > 0
    assert all(simulated == 1 and verdict in ("acceptable", "unacceptable") for verdict, simulated, _ in verdicts)

    replayed = llm_router(tmp_path, "replay", "--config", "config/demo.yaml", "--ledger", str(setup.ledger), "--json")
    assert replayed.returncode == 0, replayed.stderr
    summary = json.loads(replayed.stdout)
    assert summary["requests"] == len(PROMPTS) and summary["changed_tier"] == []
    assert summary["tiers"]["flagship"]["before"] == tiers.count("flagship")

    calibrated = llm_router(tmp_path, "calibrate", "--config", "config/demo.yaml", "--ledger", str(setup.ledger),
                            "--target-flagship-share", "0.5")
    assert calibrated.returncode == 0, calibrated.stderr
    assert "calibrating rules.7 (escalate-learned): when.escalation_gte on 8 logged requests" in calibrated.stdout
    assert "projected mid acceptance: " in calibrated.stdout

    golden = llm_router(tmp_path, "test", "--config", "config/demo.yaml", str(REPO / "config/routing-tests.yaml"))
    assert golden.returncode == 0, golden.stdout + golden.stderr
