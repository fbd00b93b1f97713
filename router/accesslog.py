"""Structured logs: one JSON object per line, and the access log (logger ``router.access``).

``configure_logging(level, json=True)`` installs the one handler every logger writes through.
``AccessLog.request(...)`` writes one line per request with routing outcome, latency, tokens and
cost. It takes only named fields, never headers or bodies, so API keys and ``Authorization``
cannot reach the log; prompts are written only when the log was built with
``include_prompts=True`` (an explicit operator opt-in: prompts may hold personal data).

A JSON line looks like::

    {"ts":"2025-01-01T12:00:00.123Z","level":"info","logger":"router.access","msg":"request",
     "request_id":"9f...","method":"POST","path":"/v1/chat/completions","status":200,"stream":false,
     "tier":"mid","backend":"mid","rule":"default-mid","task":"faq","tenant":"acme","key":"acme-prod",
     "latency_ms":812.4,"ttft_ms":null,"input_tokens":41,"output_tokens":64,"cost_usd":1.485e-05,
     "attempts":1,"fallback":null}
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

ACCESS_LOGGER = "router.access"
_FIELDS = "fields"  # LogRecord attribute carrying the structured fields


class JsonFormatter(logging.Formatter):
    """``ts``, ``level``, ``logger``, ``msg``, the record's structured fields, then ``exc`` if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, _FIELDS, None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal; structured fields follow as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = getattr(record, _FIELDS, None)
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
        return line


def configure_logging(level: str = "info", json: bool = True) -> None:
    """Route every logger through one stderr handler, JSON lines or text. Replaces the root's handlers.

    Call it in each worker process (uvicorn's spawned workers don't inherit the parent's logging
    setup), and run uvicorn with ``log_config=None`` so its loggers propagate here.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class AccessLog:
    def __init__(self, *, include_prompts: bool = False, logger: logging.Logger | None = None) -> None:
        self.include_prompts = include_prompts
        self._log = logger or logging.getLogger(ACCESS_LOGGER)

    def request(
        self,
        *,
        request_id: str,
        method: str,
        path: str,
        status: int,
        latency_s: float,
        stream: bool = False,
        tier: str | None = None,
        backend: str | None = None,
        rule: str | None = None,
        task: str | None = None,
        tenant: str | None = None,
        key: str | None = None,
        ttft_s: float | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        attempts: int = 0,
        fallback: str | None = None,
        messages: Sequence[Any] | None = None,
    ) -> None:
        """Log one finished request. ``key`` is the client key's *name*; ``fallback`` e.g. ``"mid->flagship:5xx"``.

        ``messages`` (the request's chat messages) is written only if prompts were opted in.
        """
        if not self._log.isEnabledFor(logging.INFO):
            return
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": method,
            "path": path,
            "status": status,
            "stream": stream,
            "tier": tier,
            "backend": backend,
            "rule": rule,
            "task": task,
            "tenant": tenant,
            "key": key,
            "latency_ms": round(latency_s * 1000, 1),
            "ttft_ms": None if ttft_s is None else round(ttft_s * 1000, 1),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": cost_usd,
            "attempts": attempts,
            "fallback": fallback,
        }
        if self.include_prompts and messages is not None:
            fields["messages"] = messages
        # makeRecord + handle is Logger.info without the caller lookup (a stack walk), which we don't log.
        log = self._log
        log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "request", (), None, extra={_FIELDS: fields}))
