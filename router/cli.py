"""``llm-router serve | demo | check | eval | test | replay | calibrate``: arguments -> config -> app or
evaluation (``router.evaluate``). No routing logic here."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from router.accesslog import configure_logging
from router.app import create_app
from router.config import ConfigError, GatewayConfig, check_config, load_config
from router.evaluate import calibrate, golden, labelled, replay
from router.evaluate.offline import EvaluationError, OfflineRouter, config_or_error
from router.gateway import WORKERS_ENV
from router.http_protocol import PROTOCOL
from router.ledger import LedgerRow, VerdictRow
from router.metrics import prepare_multiprocess_dir

CONFIG_ENV = "LLM_ROUTER_CONFIG"
LOG_ENV = "LLM_ROUTER_LOG"  # "<level>:<json|text>", handed to the spawned workers
#: How every server here runs: httptools with each loop turn's writes coalesced, no WebSocket
#: upgrades (no endpoint speaks WebSocket), and no X-Forwarded-* rewriting of the client address
#: (nothing reads it: clients are told apart by API key), which would cost every request a header scan.
SERVER_OPTIONS: dict[str, Any] = {"http": PROTOCOL, "ws": "none", "proxy_headers": False}
_REPO_CONFIG = Path(__file__).resolve().parent.parent / "config"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command in _EVALUATIONS:
        return _evaluation(args)
    os.environ[LOG_ENV] = f"{getattr(args, 'log_level', 'info')}:{getattr(args, 'log_format', 'text')}"
    _configure_logging()
    if args.command == "check":
        return _check(args.path)
    if args.command == "train":
        from router.train import run_command

        return run_command(args.data, args.out, c=args.c, held_out=not args.no_held_out, rules=args.rules,
                           lexicon=args.lexicon, copies=args.templates)
    if args.command == "serve":
        return _serve(args.config, args.host, args.port, args.workers, args.log_level)
    return _demo(args.config or _shipped_config("demo.yaml"), args.host, args.port, args.mid_port, args.flagship_port,
                 args.state_dir, anthropic=args.anthropic_flagship)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-router",
        description="An OpenAI-compatible gateway: each chat request is classified and routed by your YAML\n"
                    "rules to a self-hosted mid model or a flagship API. Clients change only their base_url.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway on a config file",
                                description="Run the gateway. Upstream keys come from the environment the config names.")
    serve.add_argument("--config", required=True, type=Path, help="the YAML config, e.g. config/router.yaml")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes; one per core is a good start (default: %(default)s)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="(default: %(default)s)")
    serve.add_argument("--log-format", choices=["json", "text"], default="json", help="(default: %(default)s)")

    demo = commands.add_parser("demo", help="try it: the gateway with two simulated upstreams (no keys, no GPU)",
                               description="Run the gateway on two simulated OpenAI-compatible upstreams on loopback.")
    demo.add_argument("--port", type=int, default=8080, help="the gateway's port (default: %(default)s)")
    demo.add_argument("--host", default="127.0.0.1", help="the gateway's address (default: %(default)s)")
    demo.add_argument("--mid-port", type=int, default=8081,
                      help="port of the simulated mid upstream; 0 picks a free one (default: %(default)s)")
    demo.add_argument("--flagship-port", type=int, default=8082,
                      help="port of the simulated flagship upstream; 0 picks a free one (default: %(default)s)")
    demo.add_argument("--config", type=Path, default=None, help="the demo's config (default: config/demo.yaml)")
    demo.add_argument("--state-dir", type=Path, default=_state_dir(),
                      help="where the demo keeps its spend ledger and stored Responses (default: %(default)s; "
                           "ROUTER_LEDGER_PATH and ROUTER_RESPONSES_PATH are not read: a demo never writes "
                           "to production files)")
    demo.add_argument("--anthropic-flagship", action="store_true",
                      help="the simulated flagship speaks Anthropic's Messages API (a kind: anthropic backend)")

    check = commands.add_parser("check", help="validate a config; no environment needed",
                                description="Validate a config file. Exit 0 and list the environment variables "
                                            "`serve` will need, or exit 2 with one line per problem.")
    check.add_argument("path", type=Path, help="the YAML config, e.g. config/router.yaml")

    train = commands.add_parser(
        "train", help="fit the classifier's model on labelled rows (needs llm-router[train])",
        description="Fit the learned classifier on JSON-lines rows (source, expected_tier, task, messages), print "
                    "leave-one-source-out accuracy per source, and write the model plus a report beside it. "
                    "Name the model in the config as classifier.model.")
    train.add_argument("--data", type=Path, action="append", required=True,
                       help="a JSON-lines file of labelled rows; repeat for several")
    train.add_argument("--out", type=Path, required=True, help="the model file to write, e.g. config/models/mine.npz")
    train.add_argument("--c", type=float, default=16.0, help="inverse regularisation strength (default: %(default)s)")
    train.add_argument("--rules", type=Path, default=None,
                       help="score each held-out source by routing it with this config's cues and rules "
                            "(slower: both heads are fitted per source); default: the model alone")
    train.add_argument("--lexicon", type=Path, action="append", default=[],
                       help="a TSV of `word<TAB>english`: each word is read as its English word; repeat for "
                            "several. Added to the shipped German, French, Italian, Spanish and Portuguese "
                            "lexicon, and wins where both list a word")
    train.add_argument("--templates", type=_copies, default=1, metavar="N",
                       help="also fit each row in N prompt templates (a \"Question: ... Answer:\" frame, a closing "
                            "\"Keep it short.\", ...), so a dataset's layout does not become a sign of its tier; 0 "
                            "turns it off (default: %(default)s)")
    train.add_argument("--no-held-out", action="store_true",
                       help="skip the leave-one-source-out scores (one fit instead of one per source)")
    _add_evaluation_commands(commands)
    return parser


def _copies(value: str) -> int:
    """``--templates``: a whole number of templates per row, at most as many as there are."""
    from router.templates import TRAINING

    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= len(TRAINING):
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {len(TRAINING)}, not {value!r}")
    return n


def _version() -> str:
    try:
        return version("llm-router")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def _state_dir() -> Path:
    """``$XDG_STATE_HOME/llm-router``, or ``~/.local/state/llm-router`` (the XDG base directory default)."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "llm-router"


def _add_evaluation_commands(commands: Any) -> None:
    config_help = "the gateway config (default: config/router.yaml)"
    ev = commands.add_parser("eval", help="accuracy, flagship share and projected cost on a labelled data set",
                             description="Route a labelled JSON Lines data set as the gateway would and report "
                                         "accuracy, the confusion matrix, the flagship share and the projected cost.")
    ev.add_argument("data", type=Path, help="JSON Lines: messages, expected_tier, optional task and source")
    ev.add_argument("--config", type=Path, default=None, help=config_help)
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.add_argument("--min-accuracy", type=float, default=None, help="exit 1 when tier accuracy is below this")
    ev.add_argument("-v", "--verbose", action="count", default=0, help="list misrouted rows (-vv: wrong tasks too)")

    test = commands.add_parser("test", help="run golden routing cases; exit 1 on any failure",
                               description="Route each golden case as the gateway would; a diff per failure.")
    test.add_argument("fixtures", type=Path, nargs="?", default=None,
                      help="cases file (default: routing-tests.yaml next to the config)")
    test.add_argument("--config", type=Path, default=None, help=config_help)

    rp = commands.add_parser("replay", help="re-decide logged traffic under a config (no prompts, no upstream calls)",
                             description="Re-decide the ledger's requests under a config: shares, tier changes and "
                                         "cost before -> after.")
    rp.add_argument("--config", type=Path, default=None, help="the config to replay under (default: config/router.yaml)")
    _add_ledger_arguments(rp)
    rp.add_argument("--until", default=None, help="end of the period (same forms as --since; default: now)")
    rp.add_argument("--json", action="store_true", help="print the summary as JSON")

    cal = commands.add_parser("calibrate", help="propose the threshold that gives a target flagship share",
                              description="Propose the value of a rule's score threshold that would have given the "
                                          "target flagship share on logged traffic.")
    cal.add_argument("--target-flagship-share", type=float, required=True, help="e.g. 0.25")
    cal.add_argument("--config", type=Path, default=None, help=config_help)
    _add_ledger_arguments(cal)
    cal.add_argument("--rule", default=None, help="the rule whose threshold to move (default: the first one to the flagship)")
    cal.add_argument("--json", action="store_true", help="print the proposal as JSON")


def _add_ledger_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", type=Path, default=None, help="the spend ledger (default: the one the config names)")
    parser.add_argument("--since", default=None, help="start of the period: unix time, ISO date/time (UTC) or an age (24h, 7d)")


def _ledger_rows(router: OfflineRouter, args: argparse.Namespace) -> tuple[list[LedgerRow], list[VerdictRow]]:
    """The requests and shadow verdicts logged in the period the arguments give."""
    since = replay.parse_time(args.since) if args.since else None
    until = replay.parse_time(args.until) if getattr(args, "until", None) else None
    path = args.ledger or router.config.policy.ledger.path
    if path is None:
        raise EvaluationError("the config has no ledger (policy.ledger.path); give --ledger PATH")
    if args.ledger is None and not Path(path).is_file():
        raise EvaluationError(f"{path}: no such ledger; give --ledger PATH "
                              f"(`llm-router demo` keeps its ledger in {_state_dir() / 'demo-spend.sqlite3'})")
    with replay.open_ledger(Path(path)) as ledger:
        return ledger.rows(since=since, until=until), ledger.verdicts(since=since, until=until)


def _evaluation(args: argparse.Namespace) -> int:
    """Run an evaluation command; bad input is one line on stderr and exit status 2."""
    args.config = args.config or _shipped_config("router.yaml")
    try:
        router = OfflineRouter(config_or_error(args.config))
        return _EVALUATIONS[args.command](router, args)
    except EvaluationError as exc:
        print(f"llm-router {args.command}: {exc}", file=sys.stderr)
        return 2


def _eval(router: OfflineRouter, args: argparse.Namespace) -> int:
    report = labelled.evaluate(router, labelled.load_rows(args.data, set(router.config.tiers)))
    print(json.dumps(report.as_dict(), indent=2) if args.json else labelled.render(report, verbose=args.verbose))
    if args.min_accuracy is not None and report.tier_accuracy < args.min_accuracy:
        print(f"tier accuracy {report.tier_accuracy:.3f} is below --min-accuracy {args.min_accuracy}", file=sys.stderr)
        return 1
    return 0


def _test(router: OfflineRouter, args: argparse.Namespace) -> int:
    path = args.fixtures or args.config.parent / "routing-tests.yaml"
    results = golden.run(router, golden.load_cases(path))
    print(golden.render(results, fixtures=path, config=args.config))
    return 0 if all(r.passed for r in results) else 1


def _replay(router: OfflineRouter, args: argparse.Namespace) -> int:
    rows, _ = _ledger_rows(router, args)
    summary = replay.summarize(*replay.replay(router, rows))
    print(json.dumps(summary.as_dict(), indent=2) if args.json else replay.render(summary))
    return 0


def _calibrate(router: OfflineRouter, args: argparse.Namespace) -> int:
    rows, verdicts = _ledger_rows(router, args)
    judged = {v.request_id: v.verdict == "acceptable" for v in verdicts if v.verdict != "error"}
    result = calibrate.calibrate(router, rows, args.target_flagship_share, rule=args.rule, verdicts=judged)
    print(json.dumps(result.as_dict(), indent=2) if args.json else calibrate.render(result))
    return 0


_EVALUATIONS: dict[str, Callable[[OfflineRouter, argparse.Namespace], int]] = {
    "eval": _eval, "test": _test, "replay": _replay, "calibrate": _calibrate,
}


def _load_or_report(path: Path) -> GatewayConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return None


def _check(path: Path) -> int:
    """Validate without the environment: unset required variables are what ``serve`` will need."""
    try:
        config, needs = check_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    if config is None:
        print(f"{path}: OK as far as it can be checked without the variables below (`serve` checks the rest)")
    else:
        tiers = ", ".join(f"{tier} ({', '.join(names)})" for tier, names in config.tiers.items())
        print(f"{path}: OK (version {config.digest}): tiers {tiers}; {len(config.rules)} rules; "
              f"{len(config.classifier.vocabulary.tasks)} tasks")
    for need in needs:
        state = "set but empty" if need.empty else "not set"
        print(f"serve needs {need.name} ({need.path}); {state} here")
    if config is not None:
        auth = config.auth
        sources = [("auth.keys_env", auth.keys_env)] + [(f"auth.keys.{k.name}", k.key_env) for k in auth.keys]
        for where, name in sources:
            if name and not os.environ.get(name):
                print(f"serve reads client keys from {name} ({where}); not set here")
    return 0


def _serve(path: Path, host: str, port: int, workers: int, log_level: str) -> int:
    config = _load_or_report(path)
    if config is None:
        return 2
    # Absolute, not resolved: a symlinked config (a Kubernetes ConfigMap) must be re-read through its link.
    os.environ[CONFIG_ENV] = str(path.absolute())
    os.environ[WORKERS_ENV] = str(workers)  # the workers share budgets through the ledger when there are several
    prepare_multiprocess_dir(workers)  # before the workers spawn: they inherit PROMETHEUS_MULTIPROC_DIR
    if workers > 1 and config.responses.store_path is None and not config.state.redis_url:
        print("warning: responses.store_path is not set, so each worker keeps stored Responses in its own memory "
              "and a previous_response_id follow-up served by another worker is a 404; set it to a file",
              file=sys.stderr)
    uvicorn.run(
        "router.cli:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=None,  # uvicorn's loggers propagate to ours
        access_log=False,
        timeout_keep_alive=30,
        # Then uvicorn cancels what is still running: streams end with an error event (router.api).
        timeout_graceful_shutdown=config.server.drain_seconds,
        **SERVER_OPTIONS,
    )
    return 0


def app_from_env() -> FastAPI:
    """uvicorn factory: each worker process builds its app from the config named in the environment."""
    _configure_logging()
    path = Path(os.environ[CONFIG_ENV])
    return create_app(load_config(path), path=path)


def _configure_logging() -> None:
    level, _, style = os.environ.get(LOG_ENV, "info:text").partition(":")
    configure_logging(level, json=style == "json")


def _shipped_config(name: str) -> Path:
    """``config/<name>`` of the working directory, else the one shipped with the package."""
    local = Path("config") / name
    return local if local.exists() else _REPO_CONFIG / name


def _demo(path: Path, host: str, port: int, mid_port: int, flagship_port: int, state_dir: Path, *,
          anthropic: bool = False) -> int:
    from router.simulator import SimProfile, create_simulator_app

    try:
        sockets = [_listen("127.0.0.1", mid_port, "--mid-port"), _listen("127.0.0.1", flagship_port, "--flagship-port"),
                   _listen(host, port, "--port")]
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"llm-router demo: {exc}", file=sys.stderr)
        return 2
    mid_port, flagship_port = (sock.getsockname()[1] for sock in sockets[:2])
    os.environ["MID_BASE_URL"] = f"http://127.0.0.1:{mid_port}/v1"
    # An Anthropic base URL has no /v1: the provider calls {base_url}/v1/messages, as the anthropic SDK does.
    os.environ["FLAGSHIP_BASE_URL"] = f"http://127.0.0.1:{flagship_port}" + ("" if anthropic else "/v1")
    os.environ["FLAGSHIP_KIND"] = "anthropic" if anthropic else "openai"
    # Always the demo's own ledger: never spend recorded in a production ledger named in the environment.
    os.environ["ROUTER_LEDGER_PATH"] = str(state_dir.resolve() / "demo-spend.sqlite3")
    os.environ["ROUTER_RESPONSES_PATH"] = str(state_dir.resolve() / "demo-responses.sqlite3")  # stored Responses
    config = _load_or_report(path)
    if config is None:
        return 2
    mid = config.backends[config.tiers["mid"][0]]
    flagship = config.backends[config.tiers["flagship"][0]]
    # The gateway starts last: on Ctrl-C uvicorn's servers stop in reverse order (each hands the
    # signal on to the one before it), so the gateway finishes its requests while upstreams still run.
    apps = [
        create_simulator_app(SimProfile(name="mid", model=mid.model, ttft=0.12, token_interval=0.015,
                                        context_window=mid.context_window)),
        create_simulator_app(SimProfile(name="flagship", model=flagship.model, ttft=0.35, token_interval=0.03,
                                        context_window=flagship.context_window)),
        create_app(config, path=path),
    ]
    drains = (None, None, config.server.drain_seconds)  # the gateway drains; the simulators just stop
    servers = [(_server(app, drain_seconds=drain), sock) for app, sock, drain in zip(apps, sockets, drains, strict=True)]
    wire = "Anthropic Messages API" if anthropic else "OpenAI API"
    print(_DEMO_BANNER.format(url=f"http://{host}:{port}", mid=mid_port, flagship=flagship_port, wire=wire,
                              ledger=config.policy.ledger.path or "off"), flush=True)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve_all(servers))
    except KeyboardInterrupt:  # re-raised by the last server after a graceful stop, as uvicorn.run swallows it
        pass
    return 0


def _listen(host: str, port: int, option: str) -> socket.socket:
    """A listening socket, bound before anything starts, so a taken port is one clear error."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(f"cannot listen on {host}:{port} ({reason}); pick another port with {option} "
                      f"(0 picks a free one)") from exc


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop where it is installed (it comes with uvicorn[standard]), as ``serve`` gets from uvicorn."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop (Windows)
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def _serve_all(servers: list[tuple[uvicorn.Server, socket.socket]]) -> None:
    await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))


def _server(app: ASGIApp, *, drain_seconds: float | None = None) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                         timeout_graceful_shutdown=drain_seconds, **SERVER_OPTIONS))


_EXAMPLES = """\
examples:
  llm-router demo                                 try it: two simulated upstreams, no keys, no GPU
  llm-router check config/router.yaml             validate a config; lists the variables serve needs
  llm-router serve --config config/router.yaml    run it in front of real upstreams
  llm-router train --data mine.jsonl --out config/models/mine.npz   retrain the classifier on your labels
  llm-router test                                 golden routing cases (config/routing-tests.yaml)
  llm-router eval data.jsonl --min-accuracy 0.9   accuracy and cost on a labelled set
  llm-router replay --config new.yaml --since 7d  what logged traffic would do under new rules

Run `llm-router COMMAND --help` for a command's options.
"""

_DEMO_BANNER = """\
llm-router demo: gateway on {url}  (simulated upstreams: mid on :{mid}, flagship on :{flagship} speaking the {wire}; auth off)
Spend ledger: {ledger}

Point the OpenAI SDK at it (only base_url changes):
    from openai import OpenAI
    client = OpenAI(base_url="{url}/v1", api_key="demo")
    r = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{{"role": "user", "content": "Prove that sqrt(2) is irrational."}}])
    print(r.headers["x-router-tier"], r.parse().choices[0].message.content)

Or curl:
    curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\
      -d '{{"model": "auto", "messages": [{{"role": "user", "content": "What are your opening hours?"}}]}}' -i
    curl -s {url}/v1/router/decide -H 'content-type: application/json' \\
      -d '{{"model": "auto", "messages": [{{"role": "user", "content": "Write a Python function to merge intervals"}}]}}'
    curl -sN {url}/v1/chat/completions -H 'content-type: application/json' \\
      -d '{{"model": "auto", "stream": true, "messages": [{{"role": "user", "content": "Summarise: the meeting moved to 3pm."}}]}}'

Or the Anthropic SDK (and Claude Code: ANTHROPIC_BASE_URL={url}):
    import anthropic
    client = anthropic.Anthropic(base_url="{url}", api_key="demo")
    print(client.messages.create(model="claude-sonnet-4-5", max_tokens=200,
          messages=[{{"role": "user", "content": "What are your opening hours?"}}]).content[0].text)

Ctrl-C stops everything.
"""


if __name__ == "__main__":
    sys.exit(main())
