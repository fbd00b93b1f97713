"""Config loading: every problem is reported precisely, with the file and the path inside the YAML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.cli import main
from router.config import ConfigError, check_config, load_config

REPO = Path(__file__).resolve().parents[1]

BASE = """\
backends:
  mid:
    tier: mid
    base_url: ${MID_URL:-http://127.0.0.1:8000/v1}
    model: small
  flagship:
    tier: flagship
    base_url: https://api.example.com/v1
    model: big
    api_key: ${FLAGSHIP_KEY}
classifier:
  vocabulary: VOCAB
rules:
  - name: hard
    when: {task: [math, code]}
    tier: flagship
  - name: default
    tier: mid
"""

ENV = {"FLAGSHIP_KEY": "sk-test"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(text.replace("VOCAB", str(REPO / "config" / "tasks.yaml")))
    return path


def errors_of(tmp_path: Path, text: str, env: dict[str, str] = ENV) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env)
    located = re.compile(rf"^{re.escape(str(path))}(:\d+)?: ")
    assert all(located.match(line) for line in info.value.errors), info.value.errors
    return [located.sub("", line) for line in info.value.errors]


def test_valid_config_loads_with_interpolation_and_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), ENV)
    assert config.backends["mid"].base_url == "http://127.0.0.1:8000/v1"
    assert config.backends["flagship"].api_key is not None
    assert config.backends["flagship"].api_key.get_secret_value() == "sk-test"
    assert "sk-test" not in repr(config)  # secrets never show up in reprs or logs
    assert config.tiers == {"mid": ["mid"], "flagship": ["flagship"]}
    assert len(config.digest) == 12


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("model: small", "model: small\n    colour: blue"), "backends.mid.colour: unknown key 'colour'; valid keys: tier, kind, base_url"),
        (("tier: flagship\n  - name: default", "tier: nowhere\n  - name: default"), "rules[0] 'hard'.tier: unknown tier 'nowhere'; known: ['flagship', 'mid']"),
        (("  - name: default\n    tier: mid\n", "  - name: default\n    backend: ghost\n"), "rules[1] 'default'.backend: unknown backend 'ghost'; known: ['flagship', 'mid']"),
        (("task: [math, code]", "task: [math, astrology]"), "rules[0] 'hard'.when.task: unknown task 'astrology'"),
        (("base_url: https://api.example.com/v1", "base_url: api.example.com"), "backends.flagship.base_url: must be an http(s) URL"),
        (("  - name: default\n    tier: mid\n", "  - name: default\n    when: {pii: true}\n    tier: mid\n"), "rules[1] 'default': the last rule must be a default without `when`"),
        (("  - name: hard\n    when: {task: [math, code]}\n", "  - name: hard\n"), "rules[0] 'hard': rule 'hard' has no `when`, so the rules after it can never match"),
        (("  - name: default", "  - name: hard"), "rules[1] 'hard'.name: duplicate rule name 'hard'"),
        (("    tier: flagship\n  - name", "    tier: flagship\n    backend: mid\n  - name"), "rules[0] 'hard': give exactly one target: `tier` or `backend`"),
        (("when: {task: [math, code]}", "when: {complexity_gte: 2}"), "rules[0] 'hard'.when.complexity_gte: Input should be less than or equal to 1"),
        (("rules:", "aliases: {mid: flagship}\nrules:"), "aliases.mid: already a tier, backend or 'auto'"),
        (("rules:", "aliases: {gpt-x: nowhere}\nrules:"), "aliases.gpt-x: unknown target 'nowhere'"),
        (("rules:", "policy: {fallback: {mid: [moon]}}\nrules:"), "policy.fallback.mid[0]: unknown tier or backend 'moon'; known: ['flagship', 'mid']"),
        (("rules:", "policy: {budgets: {limits: [{scope: tenant, daily_usd: 1}]}}\nrules:"), "policy.budgets.limits[0]: `name` is required"),
        (("rules:", "policy: {retries: {max_attempts: 0}}\nrules:"), "policy.retries.max_attempts: Input should be greater than or equal to 1"),
        (("rules:", "policy: {fallback_on: [thunder]}\nrules:"), "policy.fallback_on[0]: Input should be"),
        (("rules:", "auth: {keys: [{name: a, sha256: nothex}]}\nrules:"), "auth.keys[0] 'a'.sha256: String should match pattern"),
        (("rules:", "auth: {keys: [{name: a}]}\nrules:"), "auth.keys[0] 'a': give exactly one of `sha256` or `key_env`"),
        (("model: small", "model: small\n    context_window: lots"), "backends.mid.context_window: Input should be a valid integer"),
        (("rules:", "embeddings: {default: mid}\nrules:"), "embeddings.default: 'mid' is not a backend with `embeddings`; known: []"),
        (("model: big", "model: big\n    kind: anthropic\n    embeddings: {model: e}"), "backends.flagship.embeddings: only OpenAI-compatible backends"),
        (("model: big", "model: big\n    kind: anthropic\n    responses: native"), "backends.flagship.responses: native needs an OpenAI Responses API"),
    ],
)
def test_precise_errors(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in BASE
    errors = errors_of(tmp_path, BASE.replace(old, new, 1))
    assert any(line.startswith(expected) for line in errors), errors


def test_missing_env_var_is_reported_with_its_path(tmp_path: Path) -> None:
    assert errors_of(tmp_path, BASE, env={}) == [
        "backends.flagship.api_key: environment variable FLAGSHIP_KEY is not set (use ${FLAGSHIP_KEY:-default} for a default)"
    ]


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, BASE.replace("model: small", "model: [small"))
    assert errors[0].startswith("line ") and "invalid YAML" in errors[0]


def test_broken_vocabulary_is_reported_through_the_config(tmp_path: Path) -> None:
    vocabulary = tmp_path / "tasks.yaml"
    vocabulary.write_text((REPO / "config" / "tasks.yaml").read_text() + "\nbogus_section: 1\n")
    path = tmp_path / "router.yaml"
    path.write_text(BASE.replace("VOCAB", "tasks.yaml"))  # relative to the config file
    with pytest.raises(ConfigError) as info:
        load_config(path, ENV)
    assert any("classifier.vocabulary" in line and "bogus_section" in line for line in info.value.errors), info.value.errors


@pytest.mark.parametrize("name", ["router.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config = load_config(REPO / "config" / name, {"OPENAI_API_KEY": "sk-x"})
    assert config.rules[0].name == "pii-stays-self-hosted"
    assert config.backends["mid"].self_hosted and not config.backends["flagship"].self_hosted
    assert config.policy.fallback == {"mid": ["flagship"], "flagship": ["mid"]}


def test_shipped_config_takes_urls_models_and_keys_from_the_environment() -> None:
    env = {"OPENAI_API_KEY": "sk-live", "MID_BASE_URL": "http://vllm:8000/v1", "MID_MODEL": "llama",
           "FLAGSHIP_BASE_URL": "http://proxy/v1", "FLAGSHIP_MODEL": "gpt-x"}
    config = load_config(REPO / "config" / "router.yaml", env)
    assert (config.backends["mid"].base_url, config.backends["mid"].model) == ("http://vllm:8000/v1", "llama")
    assert (config.backends["flagship"].base_url, config.backends["flagship"].model) == ("http://proxy/v1", "gpt-x")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        load_config(REPO / "config" / "router.yaml", {})


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGSHIP_KEY", "sk-test")
    good = write(tmp_path, BASE)
    assert main(["check", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = write(tmp_path, BASE.replace("tier: flagship\n  - name: default", "tier: nowhere\n  - name: default"))
    assert main(["check", str(bad)]) == 2
    assert f"{bad}:16: rules[0] 'hard'.tier: unknown tier 'nowhere'" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_errors_name_the_rule_and_its_yaml_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("tier: flagship\n  - name: default", "tier: flagshp\n  - name: default"))
    with pytest.raises(ConfigError) as info:
        load_config(path, ENV)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "tier: flagshp" in text)
    assert info.value.errors == [
        f"{path}:{line}: rules[0] 'hard'.tier: unknown tier 'flagshp' (did you mean 'flagship'?); known: ['flagship', 'mid']"
    ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("model: small", "model: small\n    timeout: {total: 5}"), "backends.mid.timeout: unknown key 'timeout' (did you mean 'timeouts'?)"),
        (("rules:", "polcy: {}\nrules:"), "polcy: unknown key 'polcy' (did you mean 'policy'?)"),
        (("when: {task: [math, code]}", "when: {tsk: [math, code]}"), "rules[0] 'hard'.when.tsk: unknown key 'tsk' (did you mean 'task'?)"),
        (("rules:", "policy: {retries: {max_atempts: 2}}\nrules:"), "policy.retries.max_atempts: unknown key 'max_atempts' (did you mean 'max_attempts'?)"),
        (("rules:", "policy: {fallback: {mid: [flagshp]}}\nrules:"),
         "policy.fallback.mid[0]: unknown tier or backend 'flagshp' (did you mean 'flagship'?); known: ['flagship', 'mid']"),
        (("model: small", "model: small\n    fallback: [flagshp]"),
         "backends.mid.fallback[0]: unknown tier or backend 'flagshp' (did you mean 'flagship'?); known: ['flagship', 'mid']"),
    ],
)
def test_typos_get_a_did_you_mean(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in BASE
    assert expected in errors_of(tmp_path, BASE.replace(old, new, 1))


def test_an_empty_required_secret_is_refused(tmp_path: Path) -> None:
    assert errors_of(tmp_path, BASE, env={"FLAGSHIP_KEY": ""}) == [
        "backends.flagship.api_key: environment variable FLAGSHIP_KEY is set but empty (use ${FLAGSHIP_KEY:-default} for a default)"
    ]


def test_serve_refuses_an_empty_flagship_key(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")
    assert main(["serve", "--config", str(REPO / "config" / "router.yaml")]) == 2
    assert "OPENAI_API_KEY is set but empty" in capsys.readouterr().err


@pytest.mark.parametrize("value", [None, ""])
def test_check_passes_the_shipped_config_without_its_environment(
    value: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fresh clone: `check` validates the structure and says what `serve` will need."""
    monkeypatch.delenv("ROUTER_API_KEYS", raising=False)
    if value is None:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    else:
        monkeypatch.setenv("OPENAI_API_KEY", value)
    assert main(["check", str(REPO / "config" / "router.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    state = "not set" if value is None else "set but empty"
    assert out[1:] == [
        f"serve needs OPENAI_API_KEY (backends.flagship.api_key); {state} here",
        "serve reads client keys from ROUTER_API_KEYS (auth.keys_env); not set here",
    ]
    assert "OK (version" in out[0]


def test_check_still_reports_structural_errors_next_to_unset_variables(tmp_path: Path) -> None:
    """Only what depends on a missing value is left to `serve`; a typo elsewhere is still an error."""
    path = write(tmp_path, BASE.replace("model: small", "model: small\n    context_window: ${MID_WINDOW}")
                 .replace("tier: flagship\n  - name: default", "tier: nowhere\n  - name: default"))
    with pytest.raises(ConfigError) as info:
        check_config(path, {})
    assert [line.split(": ", 1)[1] for line in info.value.errors] == [
        "rules[0] 'hard'.tier: unknown tier 'nowhere'; known: ['flagship', 'mid']"
    ]
    fixed = write(tmp_path, path.read_text().replace("tier: nowhere", "tier: flagship"))
    config, needs = check_config(fixed, {})
    assert config is not None  # checked with the default in place of the unset value
    assert [(need.name, need.path) for need in needs] == [("MID_WINDOW", "backends.mid.context_window"),
                                                          ("FLAGSHIP_KEY", "backends.flagship.api_key")]


def test_check_leaves_a_required_value_it_cannot_build_without_to_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MID_URL", raising=False)
    monkeypatch.setenv("FLAGSHIP_KEY", "sk-test")
    path = write(tmp_path, BASE.replace("${MID_URL:-http://127.0.0.1:8000/v1}", "${MID_URL}"))
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: OK as far as it can be checked without the variables below (`serve` checks the rest)",
        "serve needs MID_URL (backends.mid.base_url); not set here",
    ]
    assert main(["serve", "--config", str(path)]) == 2
    assert "backends.mid.base_url: environment variable MID_URL is not set" in capsys.readouterr().err


def test_config_errors_never_show_a_secrets_value(tmp_path: Path) -> None:
    """Item 12: errors reach logs and /readyz; a secret swapped into the wrong field must not be quoted."""
    text = BASE.replace("base_url: https://api.example.com/v1", "base_url: ${FLAGSHIP_KEY}")
    errors = errors_of(tmp_path, text, env={"FLAGSHIP_KEY": "zq-live-0a1b2c3d4e5f"})
    assert any(line.startswith("backends.flagship.base_url: must be an http(s) URL") for line in errors), errors
    assert not any("zq-live-0a1b2c3d4e5f" in line for line in errors), errors
    assert any("[redacted]" in line for line in errors)
