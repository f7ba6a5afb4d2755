"""LLM debug blocks: model and usage from `[on_llm_after_invoke]`, nothing from prompts."""

from __future__ import annotations

import pytest

from tests.parsers.helpers import parse_one

USAGE = (
    "Usage: prompt_tokens=812 prompt_unit_price=Decimal('0.15') prompt_price_unit=Decimal('0.000001') "
    "prompt_price=Decimal('0.0001218') completion_tokens=96 completion_unit_price=Decimal('0.6') "
    "completion_price_unit=Decimal('0.000001') completion_price=Decimal('0.0000576') total_tokens=908 "
    "total_price=Decimal('0.0001794') currency='USD' latency=1.912 time_to_first_token=0.41 time_to_generate=1.5"
)


def test_after_invoke_usage() -> None:
    event = parse_one(
        "\n".join(
            [
                "[on_llm_after_invoke]",
                "Content: Model: fake-model in the answer",
                "multi-line answer",
                "Model: gpt-4o-mini",
                USAGE,
                "System Fingerprint: fp_0aa8d3e20b",
            ]
        )
    )
    assert (event.format, event.level, event.model, event.lines) == ("llm_debug", "debug", "gpt-4o-mini", 6)
    assert (event.prompt_tokens, event.completion_tokens, event.total_tokens) == (812, 96, 908)
    assert (event.cost, event.currency, event.llm_latency_seconds) == (pytest.approx(0.0001794), "USD", 1.912)


def test_pydantic_repr_with_commas_and_missing_values() -> None:
    usage = (
        "Usage: LLMUsage(prompt_tokens=10, completion_tokens=None, total_tokens=10, total_price=Decimal('NaN'), "
        "currency='', latency=0.5)"
    )
    event = parse_one("\n".join(["[on_llm_after_invoke]", "Model: m", usage]))
    assert (event.prompt_tokens, event.completion_tokens, event.total_tokens) == (10, None, 10)
    assert (event.cost, event.currency, event.llm_latency_seconds) == (None, None, 0.5)


def test_before_invoke_takes_the_first_model_line() -> None:
    event = parse_one(
        "\n".join(["[on_llm_before_invoke]", "Model: claude-3-5-sonnet", "Prompt messages:", "Model: not this"])
    )
    assert (event.model, event.level, event.message) == ("claude-3-5-sonnet", "debug", "on_llm_before_invoke")
    assert event.prompt_tokens is None


def test_invoke_error_block() -> None:
    event = parse_one("[on_llm_invoke_error]")
    assert (event.level, event.message, event.model) == ("error", "on_llm_invoke_error", None)


def test_block_without_usage_or_model() -> None:
    event = parse_one("[on_llm_after_invoke]\nContent: hi")
    assert (event.model, event.total_tokens) == (None, None)


def test_absurd_token_counts_are_dropped() -> None:
    event = parse_one(f"[on_llm_after_invoke]\nUsage: prompt_tokens={'9' * 5000} completion_tokens=3 latency=1e999")
    assert (event.format, event.prompt_tokens, event.completion_tokens, event.llm_latency_seconds) == (
        "llm_debug",
        None,
        3,
        None,
    )
