"""Chat with a model that has a chat template: the conversation it reads, fitted to its context.

    from textgen.service.catalog import Catalog
    from textgen.core.chat import ChatPrompt, chat_unsupported_reason
    from textgen.core.events import TextEvent
    from textgen.service.loading import ModelManager
    from textgen.core.settings import GenerationSettings

    backend = ModelManager(Catalog.default()).get("smollm2")
    why = chat_unsupported_reason(backend)           # None, or one line saying why this model cannot chat
    settings = GenerationSettings.parse("", temperature=0.3, max_new_tokens=200, seed=1)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    for event in backend.chat(messages, "You are a helpful assistant.", settings):
        if isinstance(event, ChatPrompt):            # first, before any token: what the model will read
            print(event.note or "", event.dropped)
        elif isinstance(event, TextEvent):
            print(event.text, end="", flush=True)    # the reply, token by token (probabilities in event.token)
        else:                                        # the Summary, exactly as for Write
            print("\\n", event.stop_description(), event.warnings)
    # The reply is event.texts[0] of the Summary: append {"role": "assistant", "content": it} to the history.

Each backend writes the reply (textgen/core/backend.py): a model on an inference engine is sent the cleaned messages
(`clean_messages`) and applies its own template over there; a model here builds its prompt with
`build_chat_prompt` below. This module only reads a tokenizer (no torch): both kinds use it.

How the prompt reaches a model here: the template is applied by transformers (`apply_chat_template` with
`add_generation_prompt=True` and `sanitize_control_tokens=True`), and the resulting token ids go to
`textgen.local.generation.stream` as they are (its `prompt_ids`). Passing the templated *text* as the prompt
instead would be wrong twice: the loop adds the model's BOS (`LoadedModel.prompt_start`) in front of a
template that already writes one (Llama-style templates: two BOS tokens), and re-encoding the text turns
control tokens typed by the user ("<|im_end|>") into real ones, which the sanitised ids do not.

The reply ends at the model's end-of-turn token (the decoding loop honours every EOS of the generation config),
and before any of the template's special tokens, which are passed as stop sequences, so the reply text
never contains them. When the conversation outgrows the model's context (less room for the reply), the
oldest turns are left out, never the system prompt or the newest message, and a note says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from textgen.core.settings import GenerationSettings, InvalidRequest, Limits, clean_text
from textgen.core.words import Phrase

ROLES = ("user", "assistant")
MAX_MESSAGES = 200  # older messages than this are left out before anything is tokenised


class ChatError(InvalidRequest):
    """A chat request that cannot be served as sent; the message says why in plain words."""


@dataclass(frozen=True)
class ChatPrompt:
    """What the model reads for one reply, and what had to be left out to fit."""

    ids: tuple[int, ...]  # the prompt as token ids, the template's special tokens included
    text: str  # the same prompt as text (what the template wrote), for showing or logging
    messages: tuple[dict[str, str], ...]  # the messages it holds, system prompt first: the turns kept
    dropped: int  # how many of the oldest messages were left out so that it fits
    note: str | None  # plain words about the left-out messages, or None when nothing was left out
    reply_room: int | None  # tokens kept free for the reply; None for a model without a context limit
    stops: tuple[str, ...]  # the template's special tokens: the reply ends before any of them


def chat_unsupported_reason(chat_template: bool | None, title: str) -> str | None:
    """None when the model can chat; else one line saying why not. `chat_template` is a backend's capability
    (textgen/core/backend.py): a model whose template only its server knows (None, an engine's) is given the benefit of
    the doubt, and the engine says so if it has none. `title` names the model."""
    if chat_template is not False:
        return None
    return Phrase("chat.cannot_chat", title=title)


class TemplatedModel(Protocol):
    """What building a prompt reads of a model here (textgen.local.model.LoadedModel is one)."""

    tokenizer: Any  # a transformers tokenizer, with the chat template
    entry: Any  # its catalog entry: `entry.title` names it in messages

    @property
    def context(self) -> int | None: ...


def build_chat_prompt(
    loaded: TemplatedModel,
    messages: object,
    system: object = None,
    max_new_tokens: int = 200,
    limits: Limits | None = None,
    warnings: list[str] | None = None,
) -> ChatPrompt:
    """The prompt for the model's next reply to `messages` (oldest first, the user's newest message last).

    `messages` are `{"role": "user" | "assistant", "content": str}` dicts; Gradio's chat history (content as
    a list of `{"type": "text", "text": ...}` parts, or `gr.ChatMessage` objects) is accepted as well. A
    leading `{"role": "system"}` message counts as the system prompt when `system` is not given.
    Cleaning the texts may add lines to `warnings`. Raises ChatError (an InvalidRequest) for a model without
    a chat template, malformed messages, or a newest message too long for the model even on its own.
    """
    why = chat_unsupported_reason(bool(getattr(loaded.tokenizer, "chat_template", None)), loaded.entry.title)
    if why:
        raise ChatError(why)
    limits = limits or Limits()
    warnings = warnings if warnings is not None else []
    system, turns = clean_messages(messages, system, limits, warnings)
    skipped = max(0, len(turns) - MAX_MESSAGES)
    turns = turns[skipped:]
    head = [{"role": "system", "content": system}] if system else []
    history, newest = turns[:-1], turns[-1]

    context = loaded.context
    reply_room = min(max(1, int(max_new_tokens)), context // 2) if context else None
    budget = context - reply_room if context else None

    # Where the kept history may start: at a user message (templates that insist on alternating roles
    # then still see user, assistant, user...), or nowhere (only the newest message).
    starts = [0, *(i for i in range(1, len(history)) if history[i]["role"] == "user"), len(history)]
    rendered: dict[int, list[int]] = {}

    def ids_from(start: int) -> list[int]:
        if start not in rendered:
            rendered[start] = _render(loaded.tokenizer, [*head, *history[start:], newest], tokenize=True)
        return rendered[start]

    if budget is None or len(ids_from(0)) <= budget:
        start = 0
    else:
        if len(ids_from(len(history))) > budget:
            raise ChatError(Phrase("chat.too_long_with_system" if system else "chat.too_long",
                                   count=len(ids_from(len(history))), title=loaded.entry.title, budget=budget))
        # Fewest turns left out: a binary search over the starts (each try renders and tokenises once).
        low, high = 1, len(starts) - 1  # starts[high] always fits; starts[0] never does
        while low < high:
            mid = (low + high) // 2
            if len(ids_from(starts[mid])) <= budget:
                high = mid
            else:
                low = mid + 1
        start = starts[high]
    kept = [*head, *history[start:], newest]
    dropped = skipped + start
    note = None
    if dropped:
        room = (Phrase("chat.dropped_room", context=context, reply=reply_room) if context
                else Phrase("chat.dropped_limit"))
        note = Phrase("chat.dropped_one" if dropped == 1 else "chat.dropped_many", title=loaded.entry.title,
                      room=room, count=dropped)
    text = _render(loaded.tokenizer, kept, tokenize=False)
    return ChatPrompt(ids=tuple(ids_from(start)), text=text,
                      messages=tuple(kept), dropped=dropped, note=note, reply_room=reply_room,
                      stops=_template_stops(loaded.tokenizer, text))


def messages_prompt(messages: object, system: object, max_new_tokens: int = 200, limits: Limits | None = None,
                    warnings: list[str] | None = None) -> ChatPrompt:
    """The prompt for a backend that applies the chat template itself (an inference engine, which also fits the
    conversation to its context): the cleaned messages, system prompt first, none left out."""
    system, turns = clean_messages(messages, system, limits or Limits(), warnings if warnings is not None else [])
    head = ({"role": "system", "content": system},) if system else ()
    conversation = (*head, *turns)
    return ChatPrompt(ids=(), text="", messages=conversation, dropped=0, note=None, reply_room=max_new_tokens,
                      stops=())


def reply_settings(settings: GenerationSettings, prompt: ChatPrompt, warnings: list[str] | None = None
                   ) -> GenerationSettings:
    """The request's settings for a chat reply: one sample, ending before the template's special tokens,
    with the prompt's note and any cleaning warnings reported in the Summary like the decoding loop's own."""
    stops = settings.stop + tuple(s for s in prompt.stops if s not in settings.stop)
    notes = (*settings.warnings, *(warnings or []), *((prompt.note,) if prompt.note else ()))
    return replace(settings, prompt="", num_samples=1, stop=stops, warnings=tuple(notes))


# -- helpers -------------------------------------------------------------------------------------------------


def clean_messages(
    messages: object, system: object, limits: Limits, warnings: list[str]
) -> tuple[str | None, list[dict[str, str]]]:
    """(the system prompt or None, the turns) of a conversation, checked and cleaned; ChatError says what is wrong.
    Cleaning a text may add lines to `warnings`."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ChatError(Phrase("chat.messages_type"))
    turns = []
    for i, message in enumerate(messages):
        role, content = _role_and_text(message)
        if role == "system" and i == 0 and system in (None, ""):
            system = content
            continue
        if role not in ROLES:
            raise ChatError(Phrase("chat.bad_role", index=i + 1, role=repr(str(role)[:20])))
        turns.append({"role": role, "content": clean_text(content, limits.max_prompt_chars, "message", warnings)})
    if not turns or turns[-1]["role"] != "user":
        raise ChatError(Phrase("chat.last_not_user"))
    if not turns[-1]["content"].strip():
        raise ChatError(Phrase("chat.newest_empty"))
    system = clean_text(system, limits.max_prompt_chars, "system prompt", warnings).strip() if system else None
    return system or None, turns


def _role_and_text(message: object) -> tuple[object, object]:
    """(role, text) of a message dict or a gr.ChatMessage; text parts joined, files and components skipped."""
    if isinstance(message, dict):
        role, content = message.get("role"), message.get("content")
    else:
        role, content = getattr(message, "role", None), getattr(message, "content", None)
    if isinstance(content, dict):
        content = [content]
    if isinstance(content, (list, tuple)):
        texts = [part.get("text") if isinstance(part, dict) else getattr(part, "text", part) for part in content]
        content = "\n".join(t for t in texts if isinstance(t, str))
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise ChatError(Phrase("chat.content_type", kind=type(content).__name__))
    return role, content


def _render(tokenizer, conversation: list[dict[str, str]], tokenize: bool):
    """The chat template applied to `conversation`, ending with the assistant's turn opened."""
    from jinja2 import TemplateError  # only when a template is applied: core stays quick to import

    try:
        if not tokenize:
            return tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        try:
            # Control tokens inside the messages ("<|im_end|>" typed by a user) become plain text: only
            # the ones the template itself writes are real. The text render cannot tell them apart.
            ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                                return_dict=False, sanitize_control_tokens=True)
        except NotImplementedError:  # a tokenizer that cannot sanitise: encode as the template wrote it
            ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                                return_dict=False)
        return [int(i) for i in ids]
    except TemplateError as err:  # templates raise on conversations they refuse (say, roles not alternating)
        raise ChatError(Phrase("chat.template_refused", detail=err)) from None


def _template_stops(tokenizer, text: str) -> tuple[str, ...]:
    """Special tokens the reply must end before: those the template wrote into the prompt, and BOS/EOS."""
    specials = dict.fromkeys(tokenizer.all_special_tokens)
    specials.update(dict.fromkeys(t.content for t in tokenizer.added_tokens_decoder.values() if t.special))
    ends = {tokenizer.bos_token, tokenizer.eos_token}
    return tuple(t for t in specials if t and t.strip() and (t in text or t in ends))
