"""Fake LLM upstreams speaking the real wire formats, for the test-suite."""

from .anthropic_upstream import FakeAnthropic
from .base import FakeUpstream, RecordedRequest
from .openai_upstream import FakeOpenAI
from .replies import Reply

__all__ = ["FakeAnthropic", "FakeOpenAI", "FakeUpstream", "RecordedRequest", "Reply"]
