"""Shadow judging: a sample of answers from lower tiers is graded by a stronger backend.

After the client has its answer (``Accountant.finish``), a request answered by a tier below the
judge's is sampled at ``policy.shadow.sample_rate``; the judge gets the conversation and the
answer with a fixed rubric and says whether the answer is acceptable. The call runs as a
background task, never on the client's path. Verdicts go to the ledger (``shadow_verdicts``) and
to ``llm_router_shadow_verdicts_total{rule,task,verdict}``; the judge's cost to
``llm_router_shadow_cost_usd_total`` and to a daily budget of its own.

Selected when an upstream answers (``select``; a selected stream keeps its chunks until it ends),
judged when the request finishes (``consider``). Never judged: requests with personal data (they
never leave self-hosted backends), failed or cut-off answers. Skipped (``llm_router_shadow_skipped_total``):
when the day's judge budget is spent, the judge's breaker is not closed, the judge is under stress,
or ``max_concurrency`` judge calls are in flight. A judge that says ``"simulated": true`` (the demo's
simulator does) is recorded as simulated.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from router.config import GatewayConfig, ShadowConfig
from router.cost import cost_usd, usage_cost, usage_from
from router.errors import GatewayError
from router.ledger import VerdictRow
from router.metrics import Metrics

if TYPE_CHECKING:  # router.state holds a ShadowState: importing these here would be circular
    from router.policy import Candidate
    from router.state import PolicyState
    from router.trace import Trace
    from router.upstream.base import Chunk, Provider

log = logging.getLogger("router.shadow")

#: The judge's instructions. Fixed, so verdicts are comparable over time; its first line tells the
#: simulator (router.simulator_text) that it is being asked to judge.
RUBRIC = """\
You are reviewing an answer another AI assistant gave in a conversation.
Decide whether the answer is acceptable: it addresses the user's last request, is correct as far as
you can tell, follows the instructions and format asked for, and is not clearly worse than what a
stronger assistant would give. Minor style differences are acceptable.
Reply with one JSON object and nothing else:
{"verdict": "acceptable" | "unacceptable", "reason": "<one short sentence>"}"""
JUDGE_MARKER = RUBRIC.splitlines()[0]
#: Characters of the conversation shown to the judge (its end: the last turns matter most).
_TRANSCRIPT_CHARS = 12_000
_ANSWER_CHARS = 8_000
_VERDICT = re.compile(r'"verdict"\s*:\s*"(acceptable|unacceptable)"')
_DAY = 86400.0


@dataclass
class ShadowState:
    """What outlives config reloads: the day's judge spend and the judge calls in flight."""

    day: int = 0
    spent_usd: float = 0.0
    #: Estimated cost of judge calls in flight, held against the daily budget.
    held_usd: float = 0.0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spent_today(self, now: float) -> float:
        day = int(now // _DAY)
        if day != self.day:
            self.day, self.spent_usd = day, 0.0
        return self.spent_usd

    def load(self, spent_today_usd: float, now: float) -> None:
        self.day, self.spent_usd = int(now // _DAY), spent_today_usd

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def day_start(now: float) -> float:
    return now - now % _DAY


def judge_messages(messages: list[dict[str, Any]], answer: str) -> list[dict[str, str]]:
    """The judge's request: the rubric, then the conversation and the answer under review."""
    lines = [f"{m.get('role', 'user')}: {_text(m.get('content'))}" for m in messages]
    transcript = "\n\n".join(lines)[-_TRANSCRIPT_CHARS:]
    return [
        {"role": "system", "content": RUBRIC},
        {"role": "user", "content": f"Conversation:\n{transcript}\n\nAnswer under review:\n{answer[:_ANSWER_CHARS]}"},
    ]


def parse_verdict(text: str) -> tuple[str, bool]:
    """``(verdict, simulated)`` from the judge's reply; ``error`` if it holds no verdict."""
    simulated = False
    try:
        data = orjson.loads(text[text.index("{") : text.rindex("}") + 1])
    except ValueError:
        data = None
    if isinstance(data, dict):
        simulated = data.get("simulated") is True
        if data.get("verdict") in ("acceptable", "unacceptable"):
            return str(data["verdict"]), simulated
    match = _VERDICT.search(text)
    return (match[1] if match else "error"), simulated


def answer_text(completion: dict[str, Any]) -> str:
    """The first choice's content, or its tool calls written out."""
    choices = completion.get("choices") or [{}]
    message = choices[0].get("message") or {}
    calls = [
        f"[tool call] {(c.get('function') or {}).get('name')}({(c.get('function') or {}).get('arguments')})"
        for c in message.get("tool_calls") or ()
    ]
    return "\n".join([_text(message.get("content")), *calls]).strip()


def streamed_text(chunks: list[Chunk]) -> str:
    """A streamed answer's first choice, put back together from its chunks."""
    content: list[str] = []
    calls: dict[int, list[str]] = {}
    for chunk in chunks:
        for choice in chunk.data.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content.append(delta.get("content") or "")
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                parts = calls.setdefault(call.get("index", 0), [])
                if function.get("name"):
                    parts.append(f"[tool call] {function['name']}(")
                parts.append(function.get("arguments") or "")
    return "\n".join(["".join(content), *("".join(p) + ")" for p in calls.values())]).strip()


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class ShadowJudge:
    """Decides which finished requests to judge, and judges them in the background."""

    def __init__(
        self,
        shadow: ShadowConfig,
        config: GatewayConfig,
        providers: Mapping[str, Provider],
        state: PolicyState,
        metrics: Metrics,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = shadow
        judge = config.tiers[shadow.judge][0] if shadow.judge in config.tiers else shadow.judge
        self.judge = judge
        self._judge_config = config.backends[judge]
        self._provider = providers.get(judge)
        ranks = config.tier_rank
        self._below = frozenset(t for t, rank in ranks.items() if rank < ranks[self._judge_config.tier])
        self._rules = frozenset(shadow.rules) if shadow.rules is not None else None
        self._state = state
        self._metrics = metrics
        self._random = (rng or random.Random()).random
        metrics.shadow_objective(shadow.min_acceptance)

    def select(self, trace: Trace) -> None:
        """Called when an upstream answered: sample the request for judging if it may be judged.

        A selected stream keeps its chunks (``trace.shadow_chunks``) until it ends.
        """
        served: Candidate | None = trace.served
        if (
            served is None
            or served.tier not in self._below
            or trace.route.features.pii
            or trace.route.plan.pii_locked
            or (self._rules is not None and trace.route.decision.rule not in self._rules)
            or self._provider is None
            or self._random() >= self.config.sample_rate
        ):
            return
        trace.shadow = True
        if trace.stream:
            trace.shadow_chunks = []

    def consider(self, trace: Trace) -> None:
        """Called once per finished request, on the event loop: judge it in the background if it
        was selected and answered in full; returns at once."""
        served = trace.served
        if not trace.shadow or served is None or trace.status >= 400:
            return
        reason = self._pause_reason()
        if reason is not None:
            self._metrics.shadow_skipped(reason)
            return
        answer = answer_text(trace.answer) if trace.answer is not None else streamed_text(trace.shadow_chunks or [])
        if not answer:
            return
        messages = judge_messages(trace.body["messages"], answer)
        estimate = cost_usd(self._judge_config.price, sum(len(m["content"]) for m in messages) // 4, self.config.max_tokens)
        shadow = self._state.shadow
        if shadow.spent_today(time.time()) + shadow.held_usd + estimate > self.config.daily_usd:
            self._metrics.shadow_skipped("budget")
            return
        shadow.held_usd += estimate
        task = asyncio.get_running_loop().create_task(self._judge(trace, served, messages, estimate))
        shadow.tasks.add(task)
        task.add_done_callback(shadow.tasks.discard)

    def _pause_reason(self) -> str | None:
        backend = self._state.backends.get(self.judge)
        if backend is not None:
            if backend.breaker.state != "closed":
                return "breaker_open"
            if backend.stress(self._judge_config, None) is not None:
                return "stress"
        if len(self._state.shadow.tasks) >= self.config.max_concurrency:
            return "busy"
        return None

    async def _judge(self, trace: Trace, served: Candidate, messages: list[dict[str, str]], estimate: float) -> None:
        rule, task = trace.route.decision.rule, trace.route.features.task
        body = {"model": self._judge_config.model, "messages": messages, "max_tokens": self.config.max_tokens,
                "temperature": 0}
        shadow = self._state.shadow
        cost = 0.0
        simulated = False
        try:
            async with asyncio.timeout(self._judge_config.timeouts.total):
                completion = await self._provider.complete(body)  # type: ignore[union-attr]
            usage = usage_from(completion.data.get("usage"), input_estimate=int(estimate), output_chars=0)
            cost = usage_cost(self._judge_config.price, usage)
            verdict, simulated = parse_verdict(answer_text(completion.data))
        except (GatewayError, TimeoutError) as exc:
            log.warning("shadow judge %s failed on request %s: %s", self.judge, trace.request_id, exc)
            verdict = "error"
        finally:
            shadow.held_usd = max(0.0, shadow.held_usd - estimate)
        shadow.spent_today(time.time())
        shadow.spent_usd += cost
        self._metrics.shadow_verdict(rule, task, verdict, cost)
        record = getattr(self._state.ledger, "record_verdict", None)  # the SQLite ledger keeps verdicts
        if record is not None:
            record(VerdictRow(
                ts=time.time(), request_id=trace.unique_id, rule=rule, task=task, backend=served.backend,
                judge=self.judge, verdict=verdict, cost_usd=cost, simulated=simulated,
            ))
