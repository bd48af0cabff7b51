"""Fake LLM upstreams speaking the real wire formats, for the test-suite."""

from .anthropic_upstream import FakeAnthropic
from .base import FakeUpstream, RecordedRequest
from .ollama_upstream import FakeOllama
from .openai_upstream import FakeOpenAI
from .replies import Reply

__all__ = ["FakeAnthropic", "FakeOllama", "FakeOpenAI", "FakeUpstream", "RecordedRequest", "Reply"]
