"""Chat models for the planners: the model under improvement wrapped as a langchain-core
`BaseChatModel`, and `make_chat_model(spec, engine)` for the specs a policy names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, SkipValidation

from engines.base import Engine, RiskFn, SamplingParams


class ChatModelError(ValueError):
    """A planner or fallback model spec that cannot be built: one line with the fix."""


def messages_to_prompt(messages: Sequence[BaseMessage]) -> str:
    """One user turn for an engine that applies its own chat template: a lone message is
    passed as is; a conversation is flattened with role labels, instructions first.

    >>> from langchain_core.messages import HumanMessage
    >>> messages_to_prompt([HumanMessage("What is 2 + 2?")])
    'What is 2 + 2?'
    >>> messages_to_prompt([SystemMessage("Be brief."), HumanMessage("Hi")])
    'Be brief.\\n\\nHi'
    """
    system = [m.text for m in messages if isinstance(m, SystemMessage)]
    turns = [m for m in messages if not isinstance(m, SystemMessage)]
    if len(turns) <= 1:
        return "\n\n".join([*system, *(m.text for m in turns)])
    labelled = [f"{'Assistant' if isinstance(m, AIMessage) else 'User'}: {m.text}" for m in turns]
    return "\n\n".join([*system, *labelled])


class EngineChatModel(BaseChatModel):
    """The model under improvement as a langchain-core chat model: greedy, one answer.

    The probe risk for the prompt (when `risk_fn` is given) is in the reply's
    `response_metadata["risk"]`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: SkipValidation[Engine] = Field(description="the engine of the model under improvement")
    max_new_tokens: int = Field(256, ge=1)
    seed: int = 0
    risk_fn: SkipValidation[RiskFn | None] = Field(
        default=None, description="the probe scoring each prompt's prefill states (None: no risk)"
    )

    @property
    def _llm_type(self) -> str:
        return "autodidact-engine"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"engine": self.engine.name, "fingerprint": self.engine.fingerprint}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        params = SamplingParams(
            max_new_tokens=kwargs.get("max_new_tokens", self.max_new_tokens),
            stop=tuple(stop or ()),
            seed=self.seed,
        )
        (generation,) = self.engine.generate(
            [messages_to_prompt(messages)], params, risk_fn=self.risk_fn
        )
        sample = generation.samples[0]
        metadata = {
            "finish_reason": sample.finish_reason,
            "risk": generation.risk,
            "model_name": self.engine.name,
        }
        message = AIMessage(content=sample.text, response_metadata=metadata)
        return ChatResult(generations=[ChatGeneration(message=message)])


def make_chat_model(
    spec: str, engine: Engine | None = None, *, max_new_tokens: int = 256
) -> BaseChatModel | None:
    """The chat model a policy spec names: 'rules' -> None (no model); 'self' -> the model
    under improvement; 'fake:REPLY' -> a model that always answers REPLY (tests, dry runs);
    'provider:model' -> langchain's `init_chat_model` (a local OpenAI-compatible server is
    'openai:NAME' with OPENAI_BASE_URL set)."""
    if spec == "rules":
        return None
    if spec == "self":
        if engine is None:
            raise ChatModelError(
                "planner 'self' needs the model under improvement: pass its engine"
            )
        return EngineChatModel(engine=engine, max_new_tokens=max_new_tokens)
    if spec == "fake" or spec.startswith("fake:"):
        return FakeListChatModel(responses=[spec.partition(":")[2] or "{}"])
    provider, sep, name = spec.partition(":")
    if not sep or not provider or not name:
        raise ChatModelError(
            f"chat model {spec!r} is not 'provider:model': use e.g. 'openai:gpt-4o-mini'"
        )
    return _init_chat_model(spec, provider, max_new_tokens)


def openai_compatible(name: str, max_new_tokens: int = 256) -> BaseChatModel:
    """'openai:NAME' as langchain-openai's ChatOpenAI: OpenAI itself, or any server that
    speaks its API (`autodidact serve`, vLLM, Ollama, a provider) at $OPENAI_BASE_URL. The
    key is read from $OPENAI_API_KEY only (never from the policy, never logged); a local
    server without one gets a placeholder. Greedy (temperature 0) within `max_new_tokens`,
    as the 'self' planner is: the same session asks the same and gets the same proposal.
    Structured proposals go out as a JSON-schema `response_format`, which `serve` (and
    vLLM) decode under constraint."""
    import os

    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        raise ChatModelError(
            f"chat model 'openai:{name}' needs langchain-openai: pip install 'autodidact[planners]'"
        ) from None
    key = os.environ.get("OPENAI_API_KEY") or (
        "unused" if os.environ.get("OPENAI_BASE_URL") else None
    )
    if key is None:
        raise ChatModelError(
            f"chat model 'openai:{name}' needs OPENAI_API_KEY, or OPENAI_BASE_URL for a local "
            "OpenAI-compatible server"
        )
    base_url = os.environ.get("OPENAI_BASE_URL") or None
    return ChatOpenAI(  # type: ignore[call-arg]
        model=name,
        api_key=key,  # type: ignore[arg-type]
        base_url=base_url,
        max_retries=1,
        temperature=0.0,
        max_tokens=max_new_tokens,
    )


def _init_chat_model(spec: str, provider: str, max_new_tokens: int) -> BaseChatModel:
    if provider == "openai":
        return openai_compatible(spec.partition(":")[2], max_new_tokens)
    package = f"langchain-{provider.replace('_', '-')}"
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise ChatModelError(
            f"chat model {spec!r} needs langchain and the provider's package: "
            f"pip install langchain {package}"
        ) from None
    try:
        return init_chat_model(spec)
    except ImportError:
        raise ChatModelError(
            f"chat model {spec!r} needs the provider's package: pip install {package}"
        ) from None
    except ValueError as error:
        raise ChatModelError(f"chat model {spec!r}: {str(error).splitlines()[0]}") from None
