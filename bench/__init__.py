"""Benchmark of the gateway's added latency and CPU (issue "Performance").

``python -m bench.run`` measures, in one run, a fast mock upstream directly, through llm-router and
optionally through LiteLLM proxy; ``python -m bench.micro`` times classification and routing alone.
"""
