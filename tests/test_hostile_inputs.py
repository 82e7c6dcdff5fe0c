"""Odd and hostile requests, sent the two ways users send them: from Python, and through the page's HTTP API.

The promise under test (textgen/service/playground.py): every request is either served, with any adjustment said in
its stats (control characters removed, characters a model does not know replaced, a long prompt cut), or
refused with a message for the person who sent it. Nothing else escapes, nothing hangs, and the server logs
no traceback for anything a user typed.

The tests at the end pin down bugs these sweeps found (all fixed).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import pytest
from gradio_client import Client
from helpers import GENERATE_INPUTS, call, generate_args, live_app
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from textgen.core.settings import CONTROLS, Limits, bounded_controls
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground, RequestError
from ui.render import stats_markdown

KNOWN = ["rnn", "lstm", "gru", "transformer", "tiny-gpt2"]  # the models of conftest's `catalog`
CHAR_MODELS = ["rnn", "lstm", "gru", "transformer"]  # char tokenizers: unknown characters become <unk>
ODD_NAMES = [
    "nope", "../x", "../../etc/passwd", "/etc/passwd", "C:\\x", "~/models/lstm", "org/model",
    "openai-community/gpt2", "gpt2", "LSTM", "lstm ", " lstm", "lstm\x00", "lstm/..", "%2e%2e/x",
    "file:///etc/passwd", "http://127.0.0.1/x", "", "x" * 10_000,
]
# What reaches a model must hold none of these (\t and \n are text; \r becomes \n).
UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def assert_clear(message: str) -> None:
    """A message for a person: some words, and no server internals."""
    assert message.strip(), "empty error message"
    assert "Traceback" not in message and 'File "' not in message, message
    assert len(message) < 1_000, f"message of {len(message)} characters"


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def playground(catalog):
    """A playground of its own, whose operator allows at most 8 new tokens (the valid requests stay fast)."""
    assert set(KNOWN) <= set(catalog.names())
    return Playground(ModelManager(catalog, device="cpu"), limits=Limits(max_new_tokens=8))



@pytest.fixture(scope="module")
def served(catalog):
    """The real page on a loopback port, over its own ModelManager (not test_app.py's slowed LSTM)."""
    playground = Playground(ModelManager(catalog, device="cpu"))
    with live_app(playground) as url:
        yield url, playground


# -- 1. the Python API, swept by hypothesis -------------------------------------------------------------

NUMBER_NAMES = ["temperature", "top_k", "top_p", "min_p", "repetition_penalty", "no_repeat_ngram_size",
                "max_new_tokens", "num_samples", "alternatives"]
VALID_CAP = {"max_new_tokens": 8, "num_samples": 2}  # valid requests stay small


def valid_number(name: str) -> st.SearchStrategy:
    control = CONTROLS[name]
    low, high, whole = control.low, VALID_CAP.get(name, control.high), control.whole
    if whole:
        return st.integers(int(low), int(high))
    return st.floats(low, high)


VALID = {name: valid_number(name) for name in NUMBER_NAMES}
VALID["seed"] = st.integers(-(2**63), 2**63 - 1)  # negative: pick one at random
VALID["stop"] = st.lists(st.text(min_size=1, max_size=4), max_size=2)


def hostile(name: str) -> st.SearchStrategy:
    """Anything an API client can send for a control: wrong types, out of range, NaN, huge, text..."""
    valid = VALID.get(name, st.integers())
    values = st.one_of(
        valid,
        valid.map(str),  # numbers sent as text, as some clients do
        st.floats(),  # NaN, infinities, anything
        st.integers(-(10**400), 10**400),  # past the largest float too
        st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 2**63, -(2**63) - 1, 10**30, -1, 0, 0.5]),
        st.sampled_from(["nan", "inf", "-inf", "1e400", " 3 ", "0x10", "1_0", "", "abc", "５", "½", "None"]),
        st.booleans(),
        st.text(max_size=8),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
        st.binary(max_size=4),
        st.complex_numbers(max_magnitude=10, allow_nan=False),
        st.tuples(st.integers()),
    )
    return st.one_of(values, st.none())


HOSTILE = {name: hostile(name) for name in [*NUMBER_NAMES, "seed"]}
HOSTILE["stop"] = st.one_of(st.none(), st.text(max_size=50), st.lists(st.text(max_size=50), max_size=6),
                            st.integers(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(), st.text()))
HOSTILE["bogus_setting"] = st.integers()

ODD_CHARS = st.one_of(
    st.characters(max_codepoint=0x1F),  # control characters
    st.sampled_from("\x7f\x85\u2028\u2029\ufeff\u200b\u202e\u202c\ufffd\uffff\U0010ffff\ue000"),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),  # lone surrogates (valid Python, not UTF-8)
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK
    st.characters(min_codepoint=0x0590, max_codepoint=0x06FF),  # Hebrew, Arabic (right to left)
    st.characters(exclude_categories=()),  # any code point at all
    st.sampled_from(["😀", "👩‍👩‍👧", "🏳️‍🌈", "🇫🇷", "👍🏽"]),  # emoji, some of several code points
)


def group(*options: st.SearchStrategy) -> st.SearchStrategy:
    """One choice among `options` that counts as one branch of an enclosing one_of (which flattens one_of)."""
    return st.one_of(*options).map(lambda value: value)


def odd_text(min_size: int = 0, max_size: int = 60) -> st.SearchStrategy:
    return st.lists(ODD_CHARS, min_size=min_size, max_size=max_size).map("".join)


TEXT_PROMPTS = st.one_of(
    st.text(alphabet=st.sampled_from("ROMEO: First Citizen\n\r\t"), max_size=40),  # text the models know
    st.text(),
    odd_text(),
    # long: up to 12,000 characters, past the limit of 10,000
    st.builds(lambda piece, n: piece * n, odd_text(1, 4), st.integers(1, 3_000)),
)
PROMPTS = st.one_of(
    TEXT_PROMPTS,
    group(st.none(), st.integers(), st.binary(max_size=8), st.lists(st.text(max_size=3), max_size=2)),
)
MODELS = st.one_of(
    st.sampled_from(KNOWN),  # half the requests name a catalogued model, the other half anything else
    group(
        st.sampled_from(ODD_NAMES),
        st.text(max_size=12),
        st.none(),
        st.integers(),
        st.lists(st.sampled_from(KNOWN), max_size=2),
        st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=1),
    ),
)


@st.composite
def controls(draw) -> dict:
    """Mostly valid controls, with up to three of them replaced by hostile values."""
    values = draw(st.fixed_dictionaries({}, optional=dict(VALID)))
    count = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))
    for name in draw(st.lists(st.sampled_from(sorted(HOSTILE)), min_size=count, max_size=count, unique=True)):
        values[name] = draw(HOSTILE[name])
    return values


def serve_or_refuse(playground: Playground, prompt, model, values: dict) -> str:
    """Send one request from Python and check the promise; returns what happened."""
    try:
        request = playground.parse(prompt, **values)
    except RequestError as err:
        assert_clear(str(err))
        named = [*values, "prompt"]
        assert any(word in str(err) for word in named), f"{err} names none of {named}"
        return "refused by parse: " + str(err).split(",")[0].split(" got")[0][:40]
    # Parsed: clean, within the operator's limits, and said so when something was changed.
    assert request.max_new_tokens <= playground.limits.max_new_tokens
    assert not UNSAFE.search(request.prompt)
    if isinstance(prompt, str) and UNSAFE.search(prompt.replace("\r", "\n")):
        assert any("removed" in w for w in request.warnings)

    if model not in playground.catalog:
        with pytest.raises(RequestError) as err:
            list(playground.generate(model, request))
        assert "unknown model" in str(err.value)
        assert_clear(str(err.value))
        return "refused: unknown model"

    # A valid request for a catalogued model is served: no RequestError either.
    live = list(playground.generate(model, request, session="hypothesis"))[-1]  # the same Live, updated
    summary = live.summary
    assert summary is not None
    assert len(summary.tokens) == request.num_samples
    assert all(n <= request.max_new_tokens for n in summary.tokens)
    assert live.text == summary.texts[0]
    assert f"**{len(live.tokens)}** token" in stats_markdown(live)
    assert playground.running() == 0
    return "served"


FAST = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(prompt=PROMPTS, model=MODELS, values=controls())
def test_any_request_is_either_served_or_refused_in_words(playground, prompt, model, values):
    event(serve_or_refuse(playground, prompt, model, values))  # pytest --hypothesis-show-statistics: the mix


@settings(FAST, max_examples=100)
@given(
    prompt=TEXT_PROMPTS.filter(lambda p: len(p) <= 10_000),
    model=st.sampled_from(KNOWN),
    values=st.fixed_dictionaries({"max_new_tokens": VALID["max_new_tokens"]},
                                 optional={k: v for k, v in VALID.items() if k != "max_new_tokens"}),
)
def test_every_valid_request_is_served(playground, prompt, model, values):
    assert serve_or_refuse(playground, prompt, model, values) == "served"


# -- 2. the public HTTP API, swept with at least 200 bad requests --------------------------------------

QUICK = {"prompt": "First", "model": "lstm", "max_new_tokens": 4}  # with helpers.generate_args: a fast valid request
SERVED, REFUSED, EITHER = "served", "refused", "either"


@dataclass
class Case:
    api: str
    args: tuple
    label: str
    expect: str  # SERVED, REFUSED or EITHER
    says: str = ""  # served: the stats mention this; refused: the message mentions this


def generate_case(label: str, expect: str, says: str = "", **changes) -> Case:
    return Case("/generate", generate_args(**{**QUICK, **changes}), label, expect, says)


def bad_numbers(name: str, low: float, high: float, whole: bool) -> list[tuple[object, str]]:
    """(value, expected outcome) pairs for one numeric control."""
    cases = [(low - 1, REFUSED), (high + 1, REFUSED), (1e308, REFUSED), (-1e308, REFUSED),
             ("nan", REFUSED), ("inf", REFUSED), ("-inf", REFUSED), ("1e400", REFUSED), ("abc", REFUSED),
             ("", REFUSED), ([], REFUSED), ({}, REFUSED), ([1], REFUSED), ({"value": 1}, REFUSED),
             (True, REFUSED), (False, REFUSED), (None, SERVED)]  # None: the default
    if whole:
        cases.append((low + 0.5 if abs(low) < 1e6 else 0.5, REFUSED))  # not a whole number
    return cases


def sweep_cases(limits: Limits) -> list[Case]:
    cases = []
    # Every control of /generate, with every kind of bad value.
    for name, control in bounded_controls(limits).items():
        if name not in GENERATE_INPUTS:
            continue
        low, high, whole = control.low, control.high, control.whole
        for value, expect in bad_numbers(name, low, high, whole):
            cases.append(generate_case(f"{name}={value!r}", expect, name if expect == REFUSED else "tokens",
                                       **{name: value}))
    for value, expect in bad_numbers("seed", -(2**63), 2**63 - 1, True):
        if value == "" or (isinstance(value, (int, float)) and value < 0):
            expect = EITHER  # "" is "no seed"; a negative seed may mean "random" or be refused
        cases.append(generate_case(f"seed={value!r}", expect, "seed" if expect == REFUSED else "",
                                   seed=value))
    cases.append(generate_case("seed=-1", SERVED, "seed", seed=-1))
    cases.append(generate_case("seed=2**63", REFUSED, "seed", seed=2**63))

    # Prompts, to a char model, a Transformer with a short context, and a byte-level BPE model.
    control_chars = "".join(map(chr, range(32))) + "\x7f"
    prompts = [
        ("empty", "", SERVED, "empty"),
        ("20k characters", "x" * 20_000, REFUSED, "limit"),
        ("exactly at the limit", "ab" * (limits.max_prompt_chars // 2), SERVED, "tokens"),
        ("binary-looking", "\x00\x01\x02\x03\xff\xfe\x80\x90" * 64 + "First", SERVED, "removed"),
        ("every control character", control_chars + "First", SERVED, "removed"),
        ("only control characters", "\x00\x07\x1b\x7f\x0b\x0c", SERVED, "removed"),
        ("CJK", "漢字仮名交じり文。東京都", SERVED, "tokens"),
        ("emoji", "👩‍👩‍👧🏳️‍🌈😀🇫🇷👍🏽", SERVED, "tokens"),
        ("mixed right to left", "First שלום مرحبا hello \u202eesrever\u202c", SERVED, "tokens"),
        ("odd code points", "\u200b\u200d\ufeff\u2028\u2029\U0010ffff\ue000\uffff a\u0301\u0308\u0345", SERVED,
         "tokens"),
        ("carriage returns", "First\r\nCitizen\rAll:", SERVED, "tokens"),
        ("markup", "<script>alert(1)</script>{{7*7}}${x}%s%n", SERVED, "tokens"),
    ]
    for label, prompt, expect, says in prompts:
        for model in ("lstm", "transformer", "tiny-gpt2"):
            if model in CHAR_MODELS and label in ("CJK", "emoji"):
                says = "not in this model's vocabulary"  # a char model says so; byte-level BPE knows every text
            elif label in ("CJK", "emoji"):
                says = "tokens"
            cases.append(generate_case(f"prompt {label} to {model}", expect, says, prompt=prompt, model=model))
    for value in (None, 123, 1.5, True, ["First"], {"text": "First"}):  # Gradio's Textbox makes text of these
        cases.append(generate_case(f"prompt={value!r}", EITHER, prompt=value))

    # Model names.
    for name in [*ODD_NAMES, None, 123, 1.5, True, [], ["lstm"], {"name": "lstm"}]:
        cases.append(generate_case(f"model={str(name)[:40]!r}", REFUSED, "unknown model", model=name))

    # /compare: prompt, models, temperature, max_new_tokens, seed.
    def compare_case(label, expect, says="", prompt="First", models=("lstm", "tiny-gpt2"), temperature=0.8,
                     max_new_tokens=4, seed=1):
        return Case("/compare", (prompt, list(models) if isinstance(models, tuple) else models, temperature,
                                 max_new_tokens, seed), label, expect, says)

    for models in [None, [], "lstm", ["lstm"], ["lstm", "lstm"], KNOWN, ["lstm", "nope"], ["lstm", 3],
                   [None, None], {"a": 1}, 123, ["../x", "/etc/passwd"], ["lstm", "x" * 5_000], [["lstm"], ["gru"]]]:
        cases.append(compare_case(f"compare models={str(models)[:40]}", REFUSED, "model", models=models))
    for name, low, high, whole in [("temperature", 0.0, 2.0, False), ("max_new_tokens", 1, limits.max_new_tokens, True),
                                   ("seed", -(2**63), 2**63 - 1, True)]:
        for value, expect in bad_numbers(name, low, high, whole):
            if name == "seed" and (value == "" or (isinstance(value, (int, float)) and value < 0)):
                expect = EITHER
            if value is None and name == "max_new_tokens":
                continue  # the default, 200 tokens, for two models: valid, only slower
            cases.append(compare_case(f"compare {name}={value!r}", expect, name if expect == REFUSED else "",
                                      **{name: value}))
    cases.append(compare_case("compare 20k prompt", REFUSED, "limit", prompt="y" * 20_000))
    cases.append(compare_case("compare control prompt", SERVED, "removed", prompt="\x00\x01First\x1b"))
    cases.append(compare_case("compare CJK prompt", SERVED, "not in this model's vocabulary", prompt="漢字"))

    # /score: text, models.
    def score_case(label, expect, says="", text="First Citizen:\nSpeak.", models=("lstm",)):
        return Case("/score", (text, list(models) if isinstance(models, tuple) else models), label, expect, says)

    for label, text, expect, says in [
        ("None", None, REFUSED, "text"), ("empty", "", REFUSED, "text"), ("blank", " \n\t ", REFUSED, "text"),
        ("over the limit", "z" * (limits.max_score_chars + 1), REFUSED, "limit"),
        ("control characters", "\x00\x01\x02First\x1b", SERVED, ""), ("CJK", "漢字仮名", SERVED, ""),
        ("emoji", "👩‍👩‍👧😀", SERVED, ""), ("right to left", "שלום مرحبا", SERVED, ""),
        ("one character", "F", SERVED, ""), ("odd code points", "\u200b\ufeff\U0010ffff\ue000", SERVED, ""),
    ]:
        cases.append(score_case(f"score text {label}", expect, says, text=text))
    for models, expect in [(None, REFUSED), ([], REFUSED), ("lstm", SERVED), (["nope"], REFUSED), ([1], REFUSED),
                           (KNOWN, REFUSED), ({"a": 1}, REFUSED), (["lstm", "lstm"], SERVED),
                           (["/etc/passwd"], REFUSED), (123, REFUSED)]:
        cases.append(score_case(f"score models={models!r}", expect, "model" if expect == REFUSED else "",
                                models=models))
    return cases


REQUEST_TIMEOUT = 30  # seconds; a request still running after this counts as hung


def send(client: Client, case: Case) -> tuple[str, object]:
    job = client.submit(*case.args, api_name=case.api)
    try:
        return SERVED, job.result(timeout=REQUEST_TIMEOUT)
    except FutureTimeout:
        job.cancel()
        return "hung", None
    except Exception as err:  # gradio_client's AppError, carrying the server's message
        return REFUSED, err


def check(case: Case, outcome: str, result: object) -> str | None:
    """What is wrong with one answer, or None."""
    if outcome == "hung":
        return f"{case.label}: no answer within {REQUEST_TIMEOUT} s"
    if case.expect != EITHER and outcome != case.expect:
        return f"{case.label}: expected {case.expect}, got {outcome}: {str(result)[:200]}"
    if outcome == REFUSED:
        message = str(result)
        try:
            assert_clear(message)
        except AssertionError as err:
            return f"{case.label}: unclear message: {err}"
        if case.says and case.says not in message:
            return f"{case.label}: message does not mention {case.says!r}: {message[:200]}"
        return None
    if case.api == "/generate":
        text, stats, _html = result
        shown = stats
        if case.args[1] in CHAR_MODELS and not text:  # every token of a char model is a character
            return f"{case.label}: served, but no text"
    elif case.api == "/compare":
        shown = "\n".join(str(s) for s in result[4:])
    else:
        table, _plot = result
        shown = str(table)
        if not table["data"]:
            return f"{case.label}: no scores"
    if case.says and case.says not in shown:
        return f"{case.label}: the answer does not say {case.says!r}: {shown[:300]}"
    return None


def test_at_least_200_bad_requests_through_the_public_api_get_an_answer_in_words(served, capfd, caplog):
    url, playground = served
    cases = sweep_cases(playground.limits)
    assert len(cases) >= 200, len(cases)
    assert {c.api for c in cases} == {"/generate", "/compare", "/score"}

    problems: list[str] = []
    outcomes = {SERVED: 0, REFUSED: 0, "hung": 0}
    lock = threading.Lock()

    def worker(chunk: list[Case]) -> None:
        client = Client(url, verbose=False)
        for case in chunk:
            outcome, result = send(client, case)
            problem = check(case, outcome, result)
            with lock:
                outcomes[outcome] += 1
                if problem:
                    problems.append(problem)

    threads = [threading.Thread(target=worker, args=(cases[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20 * 60)
    assert not any(t.is_alive() for t in threads), "the sweep did not finish"
    assert outcomes["hung"] == 0, outcomes
    assert sum(outcomes.values()) == len(cases)
    assert not problems, f"{len(problems)} of {len(cases)} answers were wrong:\n" + "\n".join(problems[:30])
    assert outcomes[SERVED] >= 40 and outcomes[REFUSED] >= 150, outcomes  # the sweep really did both

    # The server is unharmed: a normal request still writes text, and nothing is left running.
    text, stats, _ = call(Client(url, verbose=False), *generate_case("normal", SERVED).args, api_name="/generate")
    assert text and "**4** tokens" in stats
    assert playground.running() == 0
    # No traceback: neither printed (Gradio prints one for any exception but gr.Error) nor logged (textgen logs
    # one for a failure it did not expect; under pytest, log records go to caplog, not to stderr).
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, (out + err)[-3_000:]
    logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not logged, logged[:10]


# -- bugs these sweeps found, fixed ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["temperature", "max_new_tokens", "seed"])
def test_integer_past_the_float_range_is_refused_in_words(playground, name):
    with pytest.raises(RequestError, match=name):
        playground.parse("First", **{name: 10**400})


def test_integer_past_the_float_range_through_the_api(served, capfd):
    url, _ = served
    with pytest.raises(Exception) as err:
        call(Client(url, verbose=False), *generate_case("huge", REFUSED, temperature=10**400).args,
             api_name="/generate")
    assert "temperature" in str(err.value)
    assert "Traceback" not in "".join(capfd.readouterr())


@pytest.mark.parametrize("model", ["lstm", "tiny-gpt2"])
def test_tiny_positive_temperature_still_writes_text(playground, model):
    request = playground.parse("First", temperature=1e-300, max_new_tokens=5, seed=1)
    assert list(playground.generate(model, request))[-1].summary.tokens == [5]


@pytest.mark.parametrize("temperature", [0.8, 0.0])
def test_no_repeat_ngram_size_1_outlasting_a_char_vocabulary(catalog, temperature):
    playground = Playground(ModelManager(catalog, device="cpu"))
    vocabulary = len(playground.manager.get("lstm").tokenizer)
    request = playground.parse("First", no_repeat_ngram_size=1, max_new_tokens=vocabulary + 10,
                               temperature=temperature, seed=1)
    summary = list(playground.generate("lstm", request))[-1].summary
    assert summary is not None and "<unk>" not in summary.texts[0]


def test_default_max_new_tokens_respects_the_operator_limit(playground):
    request = playground.parse("First", max_new_tokens=None, seed=1)
    assert request.max_new_tokens <= playground.limits.max_new_tokens


def test_score_text_with_a_lone_surrogate(playground):
    try:
        rows = playground.score(["lstm", "tiny-gpt2"], "First \ud800 Citizen")
    except RequestError as err:
        assert "Error" not in str(err), str(err)  # refused in words, not with an exception's name
    else:
        assert len(rows) == 2
