"""The command line as a newcomer meets it: help without arguments, a version, defaults in the help."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from router.cli import main


def test_bare_command_prints_help_not_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("usage: llm-router")
    for command in ("serve", "demo", "check"):
        assert f"llm-router {command}" in out  # the examples
    assert "``" not in out  # user-facing text, not the module docstring


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"llm-router {version('llm-router')}"


@pytest.mark.parametrize(
    ("command", "defaults"),
    [
        ("serve", ["--host HOST", "(default: 127.0.0.1)", "(default: 8080)", "(default: 1)", "(default: info)", "(default: json)"]),
        ("demo", ["(default: 8080)", "(default: 8081)", "(default: 8082)", "(default: config/demo.yaml)", "llm-router;"]),
    ],
)
def test_options_show_their_defaults(command: str, defaults: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for default in defaults:
        assert default in out, default


def test_demo_state_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/srv/state")
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "(default: /srv/state/llm-router;" in " ".join(capsys.readouterr().out.split())
