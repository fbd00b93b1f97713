"""The gateway's YAML configuration: pydantic models and ``load_config``.

Every validation rule lives here, so a config that loads is a config that can serve:
references between sections (rule targets, aliases, task names) are checked at load,
and every problem is reported as ``<file>: <path.inside.yaml>: <what is wrong>``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from router.classify_model import ModelError, TextModel
from router.config_errors import located, unknown, validation_problems
from router.envsubst import MissingVariableError, interpolate
from router.redact import redact
from router.vocabulary import Vocabulary, VocabularyError, load_vocabulary

AUTO_MODEL = "auto"

ProviderKind = Literal["openai", "anthropic"]

#: Where ``kind: anthropic`` backends go when the config gives no ``base_url``.
ANTHROPIC_BASE_URL = "https://api.anthropic.com"


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_as_list)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A config file that cannot be used; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class ServerConfig(_Model):
    #: Request bodies above this size are refused with 413.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    #: A request head (request line and headers) above this size is refused with 431.
    max_header_bytes: int = Field(default=64 * 1024, gt=0)
    #: A request with more header fields than this is refused with 431.
    max_headers: int = Field(default=100, gt=0)
    #: Seconds a client has to send a request's head, from its first byte (or from connecting); then 408.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Seconds a client has to send a request's whole body, from the end of its head; then 408.
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    #: Write each request's messages into its access log line. Off: prompts can hold personal data.
    log_prompts: bool = False
    #: On SIGTERM, seconds requests in flight get to finish; then each open stream gets an error event,
    #: the ledger is flushed and the process exits. Keep it below the orchestrator's kill deadline
    #: (Kubernetes: terminationGracePeriodSeconds, 30 by default).
    drain_seconds: float = Field(default=25.0, ge=0)


class ApiKeyConfig(_Model):
    """One client key: given as a SHA-256 hash, or read from an environment variable."""

    name: str = Field(min_length=1)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    key_env: str | None = None
    tenant: str | None = None
    admin: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.sha256 is None) == (self.key_env is None):
            raise ValueError("give exactly one of `sha256` or `key_env`")
        return self


class AuthConfig(_Model):
    """Client authentication. With no keys at all, auth is off (the gateway warns at start-up)."""

    #: Environment variable holding comma-separated client keys, each ``key`` or ``key:tenant``.
    keys_env: str | None = None
    keys: list[ApiKeyConfig] = []


class PriceConfig(_Model):
    """USD per million tokens; or, for hardware you run, what the GPUs cost (``router.gpu_cost``)."""

    input: float = Field(default=0.0, ge=0)
    output: float = Field(default=0.0, ge=0)
    #: Prompt tokens read from the upstream's prompt cache; None: priced as ``input``.
    cache_read: float | None = Field(default=None, ge=0)
    #: Prompt tokens written to the upstream's prompt cache (Anthropic's cache creation); None: priced as ``input``.
    cache_write: float | None = Field(default=None, ge=0)
    #: USD per GPU-hour: the price becomes the effective $/Mtok at the observed tokens per second
    #: (``input``/``output`` apply until there is enough traffic to measure).
    gpu_hour_usd: float | None = Field(default=None, gt=0)
    gpus: int = Field(default=1, ge=1)


class TimeoutsConfig(_Model):
    """Seconds. ``first_token`` bounds the wait for the first content token, ``idle`` the gap between chunks."""

    connect: float = Field(default=5.0, gt=0)
    first_token: float = Field(default=60.0, gt=0)
    idle: float = Field(default=60.0, gt=0)
    total: float = Field(default=600.0, gt=0)


FailureKind = Literal["connect", "timeout", "rate_limit", "server_error", "context_length", "malformed", "auth"]
BudgetAction = Literal["downgrade", "reject", "allow"]


class BreakerConfig(_Model):
    """Per-backend circuit breaker: open after consecutive or windowed failures, probe after a cool-down."""

    consecutive_failures: int = Field(default=5, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    window_seconds: float = Field(default=30.0, gt=0)
    min_requests: int = Field(default=20, ge=1)
    cooldown_seconds: float = Field(default=15.0, gt=0)
    half_open_probes: int = Field(default=1, ge=1)


class CapacityConfig(_Model):
    """Saturation of a self-hosted backend, read from its own Prometheus endpoint (vLLM gauges).

    Saturated when waiting requests reach ``waiting_high`` or KV-cache use reaches ``cache_high``;
    it clears only below ``waiting_low`` and ``cache_low`` (hysteresis, so routing does not flap).
    """

    metrics_url: str | None = None
    interval_seconds: float = Field(default=2.0, gt=0)
    waiting_metric: str = "vllm:num_requests_waiting"
    cache_metric: str = "vllm:gpu_cache_usage_perc"
    waiting_high: float = Field(default=8, ge=0)
    waiting_low: float = Field(default=2, ge=0)
    cache_high: float = Field(default=0.95, ge=0, le=1)
    cache_low: float = Field(default=0.85, ge=0, le=1)
    #: Token counters (summed) that measure the backend's throughput for a ``price.gpu_hour_usd``.
    token_metrics: list[str] = ["vllm:prompt_tokens_total", "vllm:generation_tokens_total"]


class HealthCheckConfig(_Model):
    """Active health check: a GET every ``interval_seconds`` feeds the backend's circuit breaker."""

    path: str = "/models"
    interval_seconds: float = Field(default=10.0, gt=0)
    timeout_seconds: float = Field(default=2.0, gt=0)


class BackendEmbeddingsConfig(_Model):
    """This backend also serves ``/v1/embeddings``, with its own model name and price."""

    model: str = Field(min_length=1)
    #: USD per million input tokens.
    price: float = Field(default=0.0, ge=0)


class BackendConfig(_Model):
    tier: str = Field(min_length=1)
    kind: ProviderKind = "openai"
    base_url: str
    model: str = Field(min_length=1)
    api_key: SecretStr | None = None
    context_window: int = Field(default=8192, gt=0)
    price: PriceConfig = PriceConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    #: Ask the upstream for a usage chunk on streams (``stream_options.include_usage``).
    stream_usage: bool = True
    #: The model takes ``reasoning_effort`` (``reasoning.effort`` on /v1/responses); false drops it, as a
    #: request routed to a model without reasoning controls would otherwise be refused upstream.
    reasoning_effort: bool = True
    #: The name this backend takes for the output-token limit: a client's ``max_tokens`` or
    #: ``max_completion_tokens`` is sent under it (OpenAI's reasoning models refuse ``max_tokens``,
    #: Ollama and LM Studio ignore ``max_completion_tokens``). None: as the client sent it.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None
    #: Extra headers sent upstream (e.g. ``OpenAI-Organization``); never the client's.
    headers: dict[str, str] = {}
    #: Runs on hardware we control: the only kind of backend allowed to see personal data.
    self_hosted: bool = False
    #: Requests in flight beyond which this backend counts as saturated (spill over or queue). None: unlimited.
    max_concurrency: int | None = Field(default=None, ge=1)
    #: Backends or tiers to try, in order, when this one fails (overrides ``policy.fallback`` for its tier).
    fallback: list[str] | None = None
    breaker: BreakerConfig | None = None
    capacity: CapacityConfig | None = None
    health_check: HealthCheckConfig | None = None
    #: ``/v1/responses`` on this backend: ``translate`` to chat completions, or ``native`` (its own ``/responses``).
    responses: Literal["translate", "native"] = "translate"
    #: Set when this backend serves embeddings (``POST /v1/embeddings``).
    embeddings: BackendEmbeddingsConfig | None = None
    #: A non-streaming answer larger than this is cut off and fails over, like a malformed one.
    max_response_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    #: One streamed SSE event (or a line that never ends) larger than this ends the stream with an error.
    max_event_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    #: ``kind: anthropic`` only: the ``anthropic-version`` header sent upstream.
    anthropic_version: str = "2023-06-01"
    #: ``kind: anthropic`` only: ``max_tokens`` for requests that give none (Anthropic requires one).
    default_max_tokens: int = Field(default=4096, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _anthropic_base_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "anthropic" and "base_url" not in data:
            return {**data, "base_url": ANTHROPIC_BASE_URL}
        return data

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http(s) URL such as http://127.0.0.1:8000/v1, got {value!r}")
        return value.rstrip("/")

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class RetryConfig(_Model):
    #: Upstream calls per request, over all backends (retries and fallbacks included).
    max_attempts: int = Field(default=3, ge=1, le=10)
    #: Extra attempts on the same backend before falling back to the next one.
    same_backend_retries: int = Field(default=1, ge=0)
    #: Wall-clock bound over all attempts of one request.
    deadline_seconds: float = Field(default=120.0, gt=0)
    backoff_base_seconds: float = Field(default=0.2, ge=0)
    backoff_cap_seconds: float = Field(default=4.0, ge=0)
    #: Retries allowed as a share of recent requests, so retries cannot amplify an outage.
    budget_ratio: float = Field(default=0.2, ge=0, le=1)
    #: A floor of retries per second, so a quiet gateway can still retry.
    budget_min_per_second: float = Field(default=1.0, ge=0)


class BudgetLimitConfig(_Model):
    scope: Literal["global", "tenant", "key"]
    #: Tenant or key name; omitted for the global scope.
    name: str | None = None
    daily_usd: float | None = Field(default=None, gt=0)
    monthly_usd: float | None = Field(default=None, gt=0)
    #: What happens to a request this budget cannot afford (default: ``budgets.action``).
    action: BudgetAction | None = None

    @model_validator(mode="after")
    def _well_formed(self) -> Self:
        if (self.scope == "global") != (self.name is None):
            raise ValueError("`name` is required for tenant and key budgets and not allowed for the global one")
        if self.daily_usd is None and self.monthly_usd is None:
            raise ValueError("give `daily_usd`, `monthly_usd` or both")
        return self


class BudgetsConfig(_Model):
    action: BudgetAction = "downgrade"
    #: Output tokens reserved per choice when the request gives no ``max_tokens`` (capped by the
    #: backend's context window); the actual cost is settled when the request ends.
    expected_output_tokens: int = Field(default=4096, ge=0)
    limits: list[BudgetLimitConfig] = []


class RateLimitConfig(_Model):
    """Requests and tokens per minute for one key, one tenant, or the whole gateway."""

    scope: Literal["global", "tenant", "key"]
    #: Tenant or key name; omitted for the global scope, or to give each tenant (key) its own limit.
    name: str | None = None
    rpm: int | None = Field(default=None, gt=0)
    #: Input + output tokens per minute: reserved from the estimate, settled from the reported usage.
    tpm: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _well_formed(self) -> Self:
        if self.scope == "global" and self.name is not None:
            raise ValueError("a global rate limit has no `name`")
        if self.rpm is None and self.tpm is None:
            raise ValueError("give `rpm`, `tpm` or both")
        return self


class StateConfig(_Model):
    """Where budgets, rate limits and stickiness are shared. No Redis: this machine only."""

    #: ``redis://host:6379/0``; empty keeps the state in this process (and, with ``--workers``,
    #: budgets shared through the SQLite ledger).
    redis_url: str = ""
    #: Redis unreachable: ``open`` serves with this replica's local state, ``closed`` refuses
    #: requests a budget or rate limit applies to (503) until it is back.
    on_failure: Literal["open", "closed"] = "open"
    #: Prefix of every Redis key, so several gateways can share one Redis.
    key_prefix: str = Field(default="llm-router", min_length=1)
    #: Seconds a Redis call may take before the replica counts Redis as down. Generous: a replica whose
    #: own event loop is saturated reads replies late, and a false "down" serves from local state.
    timeout_seconds: float = Field(default=1.0, gt=0)
    #: Fraction of a rate limit's minute a replica takes ahead while the limit is at most half used, to
    #: admit requests without a round trip (given back every second); 0: every request asks Redis.
    rate_limit_lease: float = Field(default=0.01, ge=0.0, le=0.1)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value and not re.match(r"^(redis|rediss|unix)://", value):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")  # no echo: it may hold a password
        return value


class StickinessConfig(_Model):
    """A conversation answered by an escalated tier keeps that tier for its follow-ups."""

    enabled: bool = True
    ttl_seconds: float = Field(default=3600.0, gt=0)
    max_conversations: int = Field(default=100_000, ge=1)


class LedgerConfig(_Model):
    #: SQLite file of per-request spend (relative paths are relative to the working directory); None disables it.
    path: str | None = "llm-router-spend.sqlite3"
    #: ``postgresql://user:pass@host/db``: one ledger for every replica, instead of ``path``.
    url: str = ""
    #: Rows kept in memory while PostgreSQL is unreachable; beyond it the oldest are dropped (and counted).
    buffer_rows: int = Field(default=100_000, gt=0)
    #: Record each request's decision inputs (features, rule, requested model; never prompt text) for
    #: ``llm-router replay`` and ``calibrate``.
    record_decisions: bool = True

    @field_validator("url")
    @classmethod
    def _postgres_scheme(cls, value: str) -> str:
        if value and not re.match(r"^postgres(ql)?://", value):
            raise ValueError("must be a postgresql:// URL")  # no echo: it may hold a password
        return value


class ShadowConfig(_Model):
    """Shadow judging: a sample of answers from lower tiers is graded by the judge, off the client's path."""

    #: Share of eligible requests judged (answered in full by a tier below the judge's, no personal data).
    sample_rate: float = Field(default=0.02, ge=0, le=1)
    #: The tier or backend that judges (its first backend for a tier).
    judge: str
    #: Judge spend per UTC day; no judging beyond it. Kept apart from the request budgets.
    daily_usd: float = Field(default=5.0, gt=0)
    #: Only requests routed by these rules (default: every rule).
    rules: list[str] | None = None
    #: Judge calls in flight at most; a request sampled beyond it is skipped (``busy``).
    max_concurrency: int = Field(default=4, ge=1)
    #: Output tokens the judge may use for its verdict.
    max_tokens: int = Field(default=200, ge=16)
    #: Acceptance below which the shipped alert fires for a rule (exported as a metric).
    min_acceptance: float = Field(default=0.8, ge=0, le=1)


class PolicyConfig(_Model):
    retries: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    #: Tier -> backends or tiers to try, in order, after the tier's own backends failed.
    fallback: dict[str, list[str]] = {}
    #: Which failures move a request on to the next attempt. Other errors (400, 401, quota) never do.
    fallback_on: list[FailureKind] = ["connect", "timeout", "rate_limit", "server_error", "context_length", "malformed", "auth"]
    budgets: BudgetsConfig = BudgetsConfig()
    rate_limits: list[RateLimitConfig] = []
    stickiness: StickinessConfig = StickinessConfig()
    ledger: LedgerConfig = LedgerConfig()
    #: When the preferred tier is saturated or slower than the rule's objective, serve from the other (with a header).
    degrade_under_stress: bool = True
    shadow: ShadowConfig | None = None


class ClassifierConfig(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    #: The task vocabulary: a path (relative to the config file) or the mapping itself.
    vocabulary: Vocabulary
    #: The learned model (``llm-router train``): a path relative to the config file; none = cues only.
    model: TextModel | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _load_model(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        base = Path((info.context or {}).get("base_dir", "."))
        try:
            return TextModel.load(base / value)
        except ModelError as exc:
            raise ValueError(str(exc)) from exc

    @model_validator(mode="after")
    def _model_tasks_known(self) -> Self:
        if self.model is not None:
            unknown_tasks = sorted(set(self.model.tasks) - set(self.vocabulary.tasks))
            if unknown_tasks:
                raise ValueError(f"model: its tasks {unknown_tasks} are not in the vocabulary "
                                 f"(known: {sorted(self.vocabulary.tasks)})")
        return self

    @field_validator("vocabulary", mode="before")
    @classmethod
    def _load_file(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        base = Path((info.context or {}).get("base_dir", "."))
        try:
            return load_vocabulary(base / value)
        except (OSError, VocabularyError) as exc:
            raise ValueError(str(exc)) from exc


class WhenConfig(_Model):
    """Conditions over the classification and the request; all given ones must hold."""

    task: StrList | None = None
    task_not: StrList | None = None
    complexity_gte: float | None = Field(default=None, ge=0, le=1)
    complexity_lt: float | None = Field(default=None, ge=0, le=1)
    #: The model's probability that the request needs the flagship (needs ``classifier.model``).
    escalation_gte: float | None = Field(default=None, ge=0, le=1)
    escalation_lt: float | None = Field(default=None, ge=0, le=1)
    #: The model's probability of its top task (needs ``classifier.model``).
    confidence_gte: float | None = Field(default=None, ge=0, le=1)
    confidence_lt: float | None = Field(default=None, ge=0, le=1)
    input_tokens_gt: int | None = Field(default=None, ge=0)
    input_tokens_lte: int | None = Field(default=None, ge=0)
    pii: bool | None = None
    tools: bool | None = None
    images: bool | None = None
    model: StrList | None = None
    tenant: StrList | None = None
    api_key: StrList | None = None
    #: Request header name -> accepted value(s). Names are matched case-insensitively.
    headers: dict[str, StrList] | None = None

    @field_validator("headers")
    @classmethod
    def _lower_names(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        return None if value is None else {k.lower(): v for k, v in value.items()}


#: Rule conditions read from the learned model's output.
_MODEL_CONDITIONS = ("escalation_gte", "escalation_lt", "confidence_gte", "confidence_lt")


class RuleConfig(_Model):
    name: str = Field(min_length=1)
    description: str | None = None
    #: Omitted: the rule always matches (the default rule).
    when: WhenConfig | None = None
    tier: str | None = None
    backend: str | None = None
    #: Latency objective: prefer another tier while this target's observed time to first token is above it.
    max_ttft_ms: float | None = Field(default=None, gt=0)
    #: May the policy serve this rule's requests from another tier under budget, capacity or latency stress?
    allow_downgrade: bool = True
    #: May a conversation escalated earlier be routed here (to a lower tier) by this rule? Default: no.
    break_stickiness: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.tier is None) == (self.backend is None):
            raise ValueError("give exactly one target: `tier` or `backend`")
        return self


class ResponsesConfig(_Model):
    """``POST /v1/responses`` with ``store: true`` keeps responses here for ``previous_response_id``."""

    #: SQLite file shared by the workers; None keeps them in each worker's memory (lost on restart).
    store_path: str | None = None
    ttl_seconds: float = Field(default=30 * 86400.0, gt=0)


class EmbeddingsConfig(_Model):
    #: The backend ``model: auto`` embeddings go to; default: the first self-hosted backend with embeddings.
    default: str | None = None


class GatewayConfig(_Model):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    backends: dict[str, BackendConfig] = Field(min_length=1)
    #: Extra model names clients may send: alias -> tier, backend or ``auto``.
    aliases: dict[str, str] = {}
    classifier: ClassifierConfig
    rules: list[RuleConfig] = Field(min_length=1)
    policy: PolicyConfig = PolicyConfig()
    responses: ResponsesConfig = ResponsesConfig()
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    state: StateConfig = StateConfig()

    _digest: str = PrivateAttr(default="")

    @property
    def digest(self) -> str:
        """Short SHA-256 of the files this config was loaded from (its version)."""
        return self._digest

    @cached_property
    def tiers(self) -> dict[str, list[str]]:
        """Tier name -> backend names, in config order (the first is preferred)."""
        tiers: dict[str, list[str]] = {}
        for name, backend in self.backends.items():
            tiers.setdefault(backend.tier, []).append(name)
        return tiers

    @cached_property
    def tier_rank(self) -> dict[str, float]:
        """Tiers by price: a higher number is a more expensive (escalated) tier."""
        return {
            tier: max(self.backends[n].price.input + self.backends[n].price.output for n in names)
            for tier, names in self.tiers.items()
        }

    @cached_property
    def self_hosted(self) -> frozenset[str]:
        return frozenset(n for n, b in self.backends.items() if b.self_hosted)

    @model_validator(mode="after")
    def _references_exist(self) -> Self:
        errors: list[str] = []
        tiers = self.tiers
        for name in tiers:
            if name in self.backends and self.backends[name].tier != name:
                errors.append(f"backends.{name}: name is also a tier of other backends; pick distinct names")
        tasks = set(self.classifier.vocabulary.tasks)
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            where = f"rules.{i}"
            if rule.name in seen:
                errors.append(f"{where}.name: duplicate rule name {rule.name!r}")
            seen.add(rule.name)
            if rule.tier is not None and rule.tier not in tiers:
                errors.append(f"{where}.tier: {unknown('tier', rule.tier, tiers)}")
            if rule.backend is not None and rule.backend not in self.backends:
                errors.append(f"{where}.backend: {unknown('backend', rule.backend, self.backends)}")
            if rule.when is not None:
                if self.classifier.model is None:
                    for field in _MODEL_CONDITIONS:
                        if getattr(rule.when, field) is not None:
                            errors.append(f"{where}.when.{field}: needs a model; set classifier.model "
                                          f"(e.g. models/routing-model.npz) or drop the condition")
                for field in ("task", "task_not"):
                    for task in getattr(rule.when, field) or []:
                        if task not in tasks:
                            errors.append(f"{where}.when.{field}: {unknown('task', task, tasks)}")
                if rule.when.api_key:
                    names = {k.name for k in self.auth.keys}
                    for key in rule.when.api_key:
                        if key not in names:
                            errors.append(f"{where}.when.api_key: {unknown('key name', key, names)}")
            elif i != len(self.rules) - 1:
                errors.append(f"{where}: rule {rule.name!r} has no `when`, so the rules after it can never match")
        if self.rules[-1].when is not None:
            errors.append(
                f"rules.{len(self.rules) - 1}: the last rule must be a default without `when` "
                "(it catches every request no other rule matched)"
            )
        reserved = {AUTO_MODEL, *tiers, *self.backends}
        for alias, target in self.aliases.items():
            if alias in reserved:
                errors.append(f"aliases.{alias}: already a tier, backend or 'auto'")
            if target not in reserved:
                errors.append(f"aliases.{alias}: unknown target {target!r}; use a tier, a backend or 'auto'")
        targets = {*tiers, *self.backends}
        for tier, chain in self.policy.fallback.items():
            if tier not in tiers:
                errors.append(f"policy.fallback.{tier}: {unknown('tier', tier, tiers)}")
            for i, target in enumerate(chain):
                if target not in targets:
                    errors.append(f"policy.fallback.{tier}.{i}: {unknown('tier or backend', target, targets)}")
        for name, backend in self.backends.items():
            for i, target in enumerate(backend.fallback or []):
                if target not in targets:
                    errors.append(f"backends.{name}.fallback.{i}: {unknown('tier or backend', target, targets)}")
        shadow = self.policy.shadow
        if shadow is not None:
            if shadow.judge not in targets:
                errors.append(f"policy.shadow.judge: {unknown('tier or backend', shadow.judge, targets)}")
            rule_names = seen | {"requested-model"}  # router.rules.REQUESTED_MODEL: a client's forced model
            for i, name in enumerate(shadow.rules or []):
                if name not in rule_names:
                    errors.append(f"policy.shadow.rules.{i}: {unknown('rule', name, rule_names)}")
        for i, limit in enumerate(self.policy.budgets.limits):
            env_key = re.fullmatch(r"key-[0-9a-f]{8}", limit.name or "")  # names of keys from `keys_env`
            if limit.scope == "key" and not env_key and limit.name not in {k.name for k in self.auth.keys}:
                errors.append(f"policy.budgets.limits.{i}.name: unknown key name {limit.name!r}")
        for name, backend in self.backends.items():
            if backend.kind != "openai" and backend.embeddings is not None:
                errors.append(f"backends.{name}.embeddings: only OpenAI-compatible backends (kind: openai) serve embeddings")
            if backend.kind != "openai" and backend.responses == "native":
                errors.append(f"backends.{name}.responses: native needs an OpenAI Responses API (kind: openai)")
        default_embeddings = self.embeddings.default
        if default_embeddings is not None and (
            default_embeddings not in self.backends or self.backends[default_embeddings].embeddings is None
        ):
            serving = sorted(n for n, b in self.backends.items() if b.embeddings is not None)
            errors.append(f"embeddings.default: {default_embeddings!r} is not a backend with `embeddings`; known: {serving}")
        seen_limits: set[tuple[str, str | None]] = set()
        for i, rate in enumerate(self.policy.rate_limits):
            if (rate.scope, rate.name) in seen_limits:
                errors.append(f"policy.rate_limits.{i}: a {rate.scope} limit named {rate.name!r} is given twice")
            seen_limits.add((rate.scope, rate.name))
        key_names = [k.name for k in self.auth.keys]
        for i, name in enumerate(key_names):
            if name in key_names[:i]:
                errors.append(f"auth.keys.{i}.name: duplicate key name {name!r}")
        if errors:
            raise ValueError("\n".join(errors))
        return self


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, interpolate and validate a config file; raise ``ConfigError`` listing every problem."""
    config, _ = _load(Path(path), os.environ if environ is None else environ, need_environment=True)
    assert config is not None  # with need_environment, every failure raises
    return config


def check_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> tuple[GatewayConfig | None, list[MissingVariableError]]:
    """Validate a config as ``load_config`` does, without requiring its environment.

    Required variables that are unset or empty are returned (what ``serve`` will need) instead of
    failing; what depends on their values is left for ``serve`` to check. The config is None when
    it could only be built with those values. Every other problem raises ``ConfigError``.
    """
    return _load(Path(path), os.environ if environ is None else environ, need_environment=False)


def _load(
    path: Path, environ: Mapping[str, str], *, need_environment: bool
) -> tuple[GatewayConfig | None, list[MissingVariableError]]:
    label = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        tree = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{label}: {where}invalid YAML: {problem}"]) from exc
    if not isinstance(tree, dict):
        raise ConfigError([f"{label}: the top level must be a mapping of sections (backends, rules, ...)"])
    interpolated, missing = interpolate(tree, environ)
    if missing and need_environment:
        raise ConfigError(located(label, raw, [(m.path, str(m).removeprefix(f"{m.path}: ")) for m in missing]))
    if missing:  # each unset variable stands for itself, so the structure around it is still checked
        interpolated, _ = interpolate(tree, {**environ, **{m.name: f"${{{m.name}}}" for m in missing}})
    unchecked = tuple(m.path for m in missing)
    for _ in range(2):
        try:
            config = GatewayConfig.model_validate(interpolated, context={"base_dir": path.parent})
        except ValidationError as exc:
            problems = [p for p in validation_problems(exc, GatewayConfig) if not (unchecked and p[0].startswith(unchecked))]
            if problems:
                # Errors reach logs and /readyz: never with a secret's value in them.
                secrets = _secret_values(interpolated, raw, environ)
                raise ConfigError([redact(line, secrets) for line in located(label, raw, problems)]) from exc
            # Only values of unset variables failed: drop them (defaults apply) and check the rest again.
            for error in exc.errors():
                _drop(interpolated, error["loc"])
            continue
        config._digest = _digest(raw, config)
        return config, missing
    return None, missing


def _drop(tree: Any, loc: tuple[int | str, ...]) -> None:
    """Delete the mapping entry at ``loc`` if there is one."""
    for part in loc[:-1]:
        try:
            tree = tree[part]
        except (KeyError, IndexError, TypeError):
            return
    if loc and isinstance(tree, dict):
        tree.pop(loc[-1], None)


_SECRET_NAME = re.compile(r"(?i)key|token|secret|passw|credential|auth")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _secret_values(tree: dict[str, Any], raw: bytes, environ: Mapping[str, str]) -> list[str]:
    """Values a config error must not show: backends' keys and headers, and the variables with secret-like names it uses."""
    values = [environ.get(name, "") for name in _REFERENCE.findall(raw.decode("utf-8", "replace")) if _SECRET_NAME.search(name)]
    backends = tree.get("backends")
    for backend in backends.values() if isinstance(backends, dict) else ():
        if isinstance(backend, dict):
            values.append(str(backend.get("api_key") or ""))
            headers = backend.get("headers")
            if isinstance(headers, dict):
                values.extend(str(v) for v in headers.values())
    return [value for value in values if value]


def _digest(raw: bytes, config: GatewayConfig) -> str:
    h = hashlib.sha256(raw)
    h.update(config.classifier.vocabulary.model_dump_json().encode())
    if config.classifier.model is not None:
        h.update(config.classifier.model.digest.encode())
    return h.hexdigest()[:12]
