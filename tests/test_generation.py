"""The streaming engine: reproducible, thread-safe, cancellable, and honest about what it did."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import torch

from textgen.core.events import Summary, TextEvent
from textgen.core.settings import GenerationSettings
from textgen.local.generation import NucleusWarper, Uniforms, draw, stream

ALL_MODELS = ["rnn", "lstm", "gru", "transformer", "tiny-gpt2"]
CHAR_MODELS = ["rnn", "lstm", "gru", "transformer"]


def generate(loaded, prompt="First", cancel=None, **controls) -> tuple[list[TextEvent], Summary]:
    events = list(stream(loaded, GenerationSettings.parse(prompt, **controls), cancel))
    assert isinstance(events[-1], Summary)
    assert all(isinstance(e, TextEvent) for e in events[:-1])
    return events[:-1], events[-1]


def token_ids(events: list[TextEvent], sample: int = 0) -> list[int]:
    return [e.token.id for e in events if e.sample == sample and e.token is not None]


@contextmanager
def count_forwards(model):
    """Counts the model's steps, and the input length of each, while the block runs: its forward calls, and its
    batched decode steps (`step_rows`, a Transformer's, which take one token a text without `forward`)."""
    lengths: list[int] = []

    def hook(module, args, kwargs, output):
        lengths.append(kwargs["input_ids"].shape[1])

    handle = model.register_forward_hook(hook, with_kwargs=True)
    step_rows = model.step_rows if hasattr(model, "step_rows") else None

    def counted(input_ids, memories, sizes):
        lengths.append(1)
        return step_rows(input_ids, memories, sizes)

    if step_rows is not None:
        model.step_rows = counted
    try:
        yield lengths
    finally:
        handle.remove()
        if step_rows is not None:
            del model.step_rows


# -- reproducibility -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_same_seed_and_settings_give_the_same_text(manager, name):
    loaded = manager.get(name)
    first = generate(loaded, max_new_tokens=30, seed=42, temperature=1.0, top_k=20)
    second = generate(loaded, max_new_tokens=30, seed=42, temperature=1.0, top_k=20)
    assert first[1].texts == second[1].texts
    assert token_ids(first[0]) == token_ids(second[0])
    assert first[1].seed == 42


@pytest.mark.parametrize("name", ["lstm", "tiny-gpt2"])
def test_different_seeds_usually_give_different_texts(manager, name):
    loaded = manager.get(name)
    texts = {generate(loaded, max_new_tokens=30, seed=seed, temperature=1.0)[1].texts[0] for seed in range(5)}
    assert len(texts) >= 3


def test_an_unseeded_run_reports_the_seed_that_reproduces_it(manager):
    loaded = manager.get("gru")
    _, summary = generate(loaded, max_new_tokens=30, temperature=1.0)
    assert isinstance(summary.seed, int)
    assert generate(loaded, max_new_tokens=30, temperature=1.0, seed=summary.seed)[1].texts == summary.texts


@pytest.mark.parametrize("name", ["lstm", "transformer", "tiny-gpt2"])
def test_seeded_request_gives_the_same_text_when_run_concurrently(manager, name):
    loaded = manager.get(name)
    request = {"max_new_tokens": 40, "seed": 7, "temperature": 1.0, "top_p": 0.95}
    alone = generate(loaded, **request)[1].texts
    start = threading.Barrier(6, timeout=60)

    def run(seed):
        start.wait()
        return generate(loaded, **{**request, "seed": seed})[1].texts

    with ThreadPoolExecutor(6) as pool:
        seeded = [pool.submit(run, 7) for _ in range(4)]
        unseeded = [pool.submit(run, None) for _ in range(2)]  # other traffic alongside
        results = [f.result(timeout=60) for f in seeded]
        assert all(len(f.result(timeout=60)) == 1 for f in unseeded)  # they ran (their text may be empty)
    assert results == [alone] * 4


@pytest.mark.parametrize("name", ALL_MODELS)
def test_greedy_is_deterministic_whatever_the_seed(manager, name):
    loaded = manager.get(name)
    first = generate(loaded, max_new_tokens=25, temperature=0, seed=1)
    second = generate(loaded, max_new_tokens=25, temperature=0, seed=2)
    assert first[1].texts == second[1].texts
    assert token_ids(first[0]) == token_ids(second[0])


@pytest.mark.parametrize("name", ALL_MODELS)
def test_greedy_stream_matches_transformers_generate(manager, name):
    loaded = manager.get(name)
    tokenizer = loaded.tokenizer
    events, _ = generate(loaded, max_new_tokens=20, temperature=0)
    prompt = torch.tensor([tokenizer("First", add_special_tokens=False)["input_ids"]])
    suppress = [tokenizer.unk_token_id] if tokenizer.unk_token_id is not None else None
    with torch.no_grad():
        out = loaded.model.generate(prompt, max_new_tokens=20, do_sample=False, suppress_tokens=suppress,
                                    pad_token_id=tokenizer.eos_token_id)
    expected = out[0, prompt.shape[1]:].tolist()
    assert token_ids(events) == expected[: len(token_ids(events))]
    assert len(token_ids(events)) == len(expected)


def test_top_k_of_one_samples_the_greedy_text(manager):
    loaded = manager.get("transformer")
    sampled = generate(loaded, max_new_tokens=25, temperature=1.3, top_k=1, seed=3)[1].texts
    assert sampled == generate(loaded, max_new_tokens=25, temperature=0)[1].texts


# -- stopping ---------------------------------------------------------------------------------------


def test_cancel_from_another_thread_stops_before_the_next_forward_step(manager):
    """Stop pressed while the model is mid-step: that token is the last, no forward step follows it. (The run
    does not wait for its reader, textgen.local.batching: Stop is measured against the model's steps.)"""
    loaded = manager.get("lstm")
    cancel, k = threading.Event(), 10
    steps: list[int] = []

    def hook(module, args, kwargs, output):
        steps.append(1)
        if len(steps) == k:
            threading.Thread(target=cancel.set).start()
            assert cancel.wait(timeout=10)  # set while this step is still being taken

    handle = loaded.model.register_forward_hook(hook, with_kwargs=True)
    try:
        events = list(stream(loaded, GenerationSettings.parse("First", max_new_tokens=500, seed=1), cancel))
    finally:
        handle.remove()
    summary = events[-1]
    assert len(steps) == k  # within one token: the token being read ends the run, no step follows
    assert summary.stop_reasons == ["cancelled"]
    assert summary.tokens[0] == k  # the prompt's step and k - 1 more each gave one token
    assert summary.forward_steps == len(steps)


def test_cancel_set_before_the_start_runs_no_forward_step(manager):
    loaded = manager.get("gru")
    cancel = threading.Event()
    cancel.set()
    with count_forwards(loaded.model) as forwards:
        events, summary = generate(loaded, cancel=cancel, max_new_tokens=50)
    assert forwards == []
    assert events == []
    assert summary.stop_reasons == ["cancelled"]
    assert summary.tokens == [0]


def test_a_consumer_that_stops_reading_stops_the_model(manager):
    """The model writes ahead of its reader (textgen.local.batching), but a reader that goes away takes it out at
    the next step: it does not write on to its 500 tokens for nobody."""
    loaded = manager.get("transformer")
    steps: list[int] = []

    def slow(module, args, output):  # every step of the model, batched or not, ends in its head
        steps.append(1)
        time.sleep(0.01)

    handle = loaded.model.lm_head.register_forward_hook(slow)
    try:
        events = stream(loaded, GenerationSettings.parse("First", max_new_tokens=500, seed=1))
        for i, _ in enumerate(events):
            if i == 4:
                break
        events.close()
        deadline = time.monotonic() + 30
        while loaded.scheduler.load != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        settled = len(steps)
        time.sleep(0.2)
    finally:
        handle.remove()
    assert loaded.scheduler.load == (0, 0)
    assert len(steps) == settled < 100


@pytest.mark.parametrize("name", ALL_MODELS)
def test_stop_sequence_ends_the_text_just_before_it(manager, name):
    loaded = manager.get(name)
    full = generate(loaded, max_new_tokens=60, temperature=1.0, seed=5)[1].texts[0]
    stop = full[12:14]
    assert len(stop) == 2
    events, summary = generate(loaded, max_new_tokens=60, temperature=1.0, seed=5, stop=[stop])
    text = summary.texts[0]
    assert text == full[: full.index(stop)]
    assert stop not in text
    assert summary.stop_reasons == ["stop_sequence"]
    assert "".join(e.text for e in events) == text


def test_the_earliest_of_several_stop_sequences_wins(manager):
    loaded = manager.get("gru")
    full = generate(loaded, max_new_tokens=60, temperature=0)[1].texts[0]
    later, earlier = full[30:33], full[8:10]
    summary = generate(loaded, max_new_tokens=60, temperature=0, stop=[later, earlier])[1]
    assert summary.texts[0] == full[: min(full.index(later), full.index(earlier))]


def test_text_held_back_for_a_stop_sequence_that_never_comes_is_released(manager):
    loaded = manager.get("lstm")
    full = generate(loaded, max_new_tokens=40, seed=9)[1].texts[0]
    stop = full[-1] + "\x01never"  # the text's last character starts it, the rest cannot be generated
    events, summary = generate(loaded, max_new_tokens=40, seed=9, stop=stop)
    assert summary.texts[0] == full
    assert summary.stop_reasons == ["length"]
    assert events[-1].token is None and events[-1].text == full[-1]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_max_new_tokens_is_respected(manager, name):
    events, summary = generate(manager.get(name), max_new_tokens=17, seed=1, temperature=0.5)
    if summary.stop_reasons == ["end_of_text"]:
        assert summary.tokens[0] < 17
    else:
        assert summary.stop_reasons == ["length"]
        assert summary.tokens == [17]
        assert len(token_ids(events)) == 17


def test_end_of_text_token_ends_the_text(manager):
    loaded = manager.get("tiny-gpt2")
    eos = loaded.tokenizer.eos_token_id

    def always_eos(module, args, output):
        output.logits[..., eos] = 1e4
        return output

    handle = loaded.model.register_forward_hook(always_eos)
    try:
        events, summary = generate(loaded, max_new_tokens=20, seed=1)
    finally:
        handle.remove()
    assert summary.stop_reasons == ["end_of_text"]
    assert summary.tokens == [0]
    assert summary.texts == [""]
    assert [(e.text, e.token.id) for e in events] == [("", eos)]


def test_every_end_of_text_token_of_the_generation_config_ends_the_text(manager):
    # Chat models (Llama 3, Qwen) list several: end-of-text and end-of-turn. Any of them ends the text.
    loaded = manager.get("tiny-gpt2")
    first = token_ids(generate(loaded, temperature=0, max_new_tokens=1)[0])[0]
    config = loaded.model.generation_config
    saved = config.eos_token_id
    config.eos_token_id = [loaded.tokenizer.eos_token_id, first]
    try:
        events, summary = generate(loaded, temperature=0, max_new_tokens=20)
    finally:
        config.eos_token_id = saved
    assert summary.stop_reasons == ["end_of_text"] and summary.tokens == [0]


def test_a_tokenizer_that_starts_texts_with_a_special_token_gets_it_before_the_prompt(manager, monkeypatch):
    loaded = manager.get("tiny-gpt2")
    bos = loaded.tokenizer.eos_token_id  # GPT-2's BOS and EOS are one token
    monkeypatch.setitem(loaded.__dict__, "prompt_start", [bos])  # as a Llama tokenizer reports it
    with count_forwards(loaded.model) as forwards:
        plain = GenerationSettings.parse("First", max_new_tokens=1, seed=1)
        summary = list(stream(loaded, plain))[-1]
    prompt_ids = loaded.tokenizer("First", add_special_tokens=False)["input_ids"]
    assert summary.prompt_tokens == len(prompt_ids) + 1 and forwards[0] == len(prompt_ids) + 1


def test_a_real_bos_tokenizer_is_detected():
    from tokenizers import processors

    from textgen.local.model import LoadedModel
    from textgen.local.tokenization import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(["some text for a tokenizer"], vocab_size=270)
    eos = tokenizer.eos_token_id
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", eos)])
    assert LoadedModel(None, None, tokenizer, torch.device("cpu"), 0.0).prompt_start == [eos]


def test_a_long_prompt_to_a_recurrent_model_is_read_in_pieces_with_the_same_result(manager, monkeypatch):
    import textgen.local.generation

    loaded = manager.get("lstm")
    prompt = "First Citizen: speak, speak. " * 40  # 1,160 characters
    whole = GenerationSettings.parse(prompt, max_new_tokens=30, seed=3)
    monkeypatch.setattr(textgen.local.generation, "PREFILL_CHUNK", 10_000)
    at_once = list(stream(loaded, whole))[-1]
    monkeypatch.setattr(textgen.local.generation, "PREFILL_CHUNK", 256)
    with count_forwards(loaded.model) as forwards:
        pieces = list(stream(loaded, whole))[-1]
    assert forwards[:5] == [256, 256, 256, 256, 136]
    assert pieces.texts == at_once.texts


def test_stop_during_a_long_recurrent_prompt_is_heard_after_one_piece(manager):
    loaded = manager.get("gru")
    cancel = threading.Event()
    handle = loaded.model.register_forward_hook(lambda *args: cancel.set())  # Stop arrives during the 1st piece
    try:
        events, summary = generate(loaded, "First Citizen: " * 100, cancel=cancel, max_new_tokens=50)
    finally:
        handle.remove()
    assert summary.forward_steps == 1 and summary.stop_reasons == ["cancelled"] and events == []


# -- samples, prompts, context -------------------------------------------------------------------


def test_num_samples_gives_that_many_texts_tagged_by_sample(manager):
    events, summary = generate(manager.get("lstm"), max_new_tokens=20, num_samples=3, seed=4, temperature=1.0)
    assert len(summary.texts) == len(summary.tokens) == len(summary.stop_reasons) == 3
    assert {e.sample for e in events} == {0, 1, 2}
    for sample in range(3):
        assert "".join(e.text for e in events if e.sample == sample) == summary.texts[sample]
    assert summary.tokens == [20, 20, 20]
    assert len(set(summary.texts)) > 1


def test_prompt_longer_than_the_context_is_cut_from_the_left(manager, tiny_text):
    loaded = manager.get("transformer")
    assert loaded.context == 64
    prompt = tiny_text[:200]
    with count_forwards(loaded.model) as forwards:
        _, summary = generate(loaded, prompt, max_new_tokens=10, seed=1)
    assert summary.prompt_tokens_cut == 200 - 63
    assert summary.prompt_tokens == 63
    assert forwards[0] == 63
    assert any("cut" in w for w in summary.warnings)
    assert summary.tokens == [10]
    # the cut prompt continues exactly like its last 63 characters given directly
    assert generate(loaded, prompt[-63:], max_new_tokens=10, seed=1)[1].texts == summary.texts


@pytest.mark.parametrize("name", ["transformer", "tiny-gpt2"])
def test_generation_continues_past_the_context(manager, name):
    loaded = manager.get(name)
    with count_forwards(loaded.model) as forwards:
        _, summary = generate(loaded, max_new_tokens=150, seed=2, temperature=0.9)
    assert summary.stop_reasons in (["length"], ["end_of_text"])
    if summary.stop_reasons == ["length"]:
        assert summary.tokens == [150]
        assert summary.notes == [f"this model reads at most {loaded.context} tokens at a time, so past that it "
                                 "wrote on from the most recent part of the text"]
        assert not summary.warnings  # nothing was wrong with the request
    assert max(forwards) <= loaded.context


def test_past_the_context_the_model_refills_once_per_half_context(manager):
    loaded = manager.get("transformer")
    with count_forwards(loaded.model) as forwards:
        _, summary = generate(loaded, max_new_tokens=150, seed=2)
    assert summary.tokens == [150]
    refills = [n for n in forwards[1:] if n > 1]
    # Each refill reads the text's most recent half context (32 tokens), and the next comes 32 tokens later:
    # the 5-token prompt and 150 new tokens fill the context of 64 once, then refill at 65, 97 and 129 tokens.
    assert refills == [loaded.context // 2] * 3
    assert len(forwards) == 150  # otherwise one step a token: the prompt, 149 single tokens (3 of them refills)


@pytest.mark.parametrize("name", CHAR_MODELS)
def test_char_model_with_unknown_characters_warns_and_never_writes_unk(manager, name):
    loaded = manager.get(name)
    unk = loaded.tokenizer.unk_token_id
    events, summary = generate(loaded, "你好 😀 First", max_new_tokens=60, temperature=2.0, seed=3)
    assert any("not in this model's vocabulary" in w and "你好😀" in w for w in summary.warnings)
    assert summary.tokens == [60]
    assert unk not in token_ids(events)
    assert all(alt != "<unk>" for e in events for alt, _ in e.token.alternatives)


@pytest.mark.parametrize("name", ["lstm", "transformer", "tiny-gpt2"])
def test_empty_prompt_starts_from_scratch(manager, name):
    events, summary = generate(manager.get(name), "", max_new_tokens=15, seed=1)
    assert any("from scratch" in w for w in summary.warnings)
    assert summary.prompt_tokens == 1
    assert summary.tokens == [15] or summary.stop_reasons == ["end_of_text"]


def test_prompt_warnings_from_parsing_reach_the_summary(manager):
    _, summary = generate(manager.get("gru"), "First\x00 Citizen", max_new_tokens=5)
    assert any("removed" in w for w in summary.warnings)


# -- what each token reports -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_token_probabilities_are_probabilities_and_alternatives_are_sorted(manager, name):
    events, _ = generate(manager.get(name), max_new_tokens=30, seed=6, temperature=1.2, alternatives=5)
    infos = [e.token for e in events if e.token is not None]
    assert infos
    for info in infos:
        assert 0 < info.prob <= 1
        probs = [p for _, p in info.alternatives]
        assert 1 <= len(probs) <= 5
        assert all(0 <= p <= 1 for p in probs)
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1 + 1e-4


def test_top_k_limits_the_alternatives_and_contains_the_choice(manager):
    events, _ = generate(manager.get("transformer"), max_new_tokens=30, seed=6, temperature=1.0, top_k=3)
    for info in (e.token for e in events):
        assert len(info.alternatives) <= 3
        assert sum(p for _, p in info.alternatives) == pytest.approx(1.0, abs=1e-4)
        assert info.prob in [p for _, p in info.alternatives]


def test_top_p_draws_only_from_the_likeliest_tokens_that_make_up_p(manager):
    loaded = manager.get("lstm")
    controls = {"max_new_tokens": 30, "seed": 4, "temperature": 1.0, "alternatives": 10}
    events, _ = generate(loaded, top_p=0.2, **controls)
    everything, _ = generate(loaded, top_p=1.0, **controls)
    assert token_ids(events) != token_ids(everything)  # the same seed draws otherwise once top-p cuts the tail
    assert all(len(e.token.alternatives) == 10 for e in everything)  # nothing cut: every token has a chance
    cut = [e.token for e in events if len(e.token.alternatives) < 10]
    assert len(cut) > len(events) / 2  # mostly, fewer than 10 tokens make up 20%
    for info in cut:  # then the alternatives are all there is to draw from, and they share 100% again
        assert sum(p for _, p in info.alternatives) == pytest.approx(1.0, abs=1e-4)
        assert info.prob in [p for _, p in info.alternatives]
    # A top-p smaller than the likeliest token's share keeps that token alone: the greedy text.
    tight, _ = generate(loaded, top_p=0.01, **controls)
    greedy, _ = generate(loaded, temperature=0, max_new_tokens=30)
    assert token_ids(tight) == token_ids(greedy)
    assert all(len(e.token.alternatives) == 1 for e in tight)


@pytest.mark.parametrize("threads", [1, 2])
def test_top_p_on_a_large_vocabulary_keeps_exactly_what_transformers_keeps(threads):
    """The short cut (a sort of the scores alone, not of their token numbers; its rows split between the threads
    where the scheduler gives a batch's choice two) against transformers' own."""
    from transformers import TopPLogitsWarper

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _compare_top_p_with_transformers(TopPLogitsWarper)
    finally:
        torch.set_num_threads(before)


def _compare_top_p_with_transformers(TopPLogitsWarper) -> None:
    gen = torch.Generator().manual_seed(0)
    peaked = torch.randn(6, 50_257, generator=gen) * 4  # GPT-2-sized rows whose nucleus is a few hundred tokens
    flat = torch.randn(2, 50_257, generator=gen) * 0.1  # rows whose nucleus is most of the vocabulary: the sort
    banned = peaked.clone()
    banned[:, ::3] = float("-inf")  # rows an earlier control (top-k, a penalty) has already cut
    for scores in (peaked, flat, torch.cat([peaked, flat]), banned):
        for p in (0.01, 0.5, 0.9, 0.95, 0.99):
            ours, theirs = NucleusWarper(p)(None, scores), TopPLogitsWarper(p)(None, scores)
            assert torch.equal(ours.isinf(), theirs.isinf()), p  # the same tokens kept
            assert torch.equal(ours[~ours.isinf()], theirs[~theirs.isinf()])  # with their own scores


def test_greedy_choice_is_the_first_alternative(manager):
    loaded = manager.get("gru")
    events, _ = generate(loaded, max_new_tokens=20, temperature=0)
    for info in (e.token for e in events):
        assert info.prob == info.alternatives[0][1]
        assert info.text == info.alternatives[0][0] == loaded.tokenizer.decode([info.id])


def test_zero_alternatives_reports_none(manager):
    events, _ = generate(manager.get("rnn"), max_new_tokens=5, alternatives=0, seed=1)
    assert all(e.token.alternatives == [] for e in events)


def test_summary_counts_forward_steps_and_time(manager):
    loaded = manager.get("lstm")
    with count_forwards(loaded.model) as forwards:
        _, summary = generate(loaded, max_new_tokens=12, seed=1)
    assert summary.forward_steps == len(forwards)
    assert forwards[0] == len("First") and set(forwards[1:]) == {1}  # one prefill, then one token a step
    assert summary.prompt_tokens == 5 and summary.prompt_tokens_cut == 0
    assert summary.seconds > 0 and summary.tokens_per_second == pytest.approx(12 / summary.seconds)
    assert 0 < summary.time_to_first_token <= summary.seconds


def test_no_forward_step_is_wasted_after_the_last_token(manager):
    loaded = manager.get("lstm")
    with count_forwards(loaded.model) as forwards:
        _, summary = generate(loaded, max_new_tokens=12, seed=1)
    assert summary.tokens == [12]
    assert len(forwards) == 12  # the prefill gives the first token, each later step one more


def test_random_numbers_drawn_ahead_are_the_ones_drawn_a_token_at_a_time():
    ahead, one_by_one = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    numbers = Uniforms(ahead)
    taken = torch.cat([numbers.take(rows) for rows in [1, 3, 2] * 100])  # past the first 256 drawn ahead
    assert torch.equal(taken, torch.cat([torch.rand(1, 1, generator=one_by_one) for _ in range(len(taken))]))


def test_a_draw_follows_the_distribution_and_never_picks_an_impossible_token():
    scores = torch.tensor([[0.5, 0.0, 0.3, 0.2, 0.0]]).log()  # tokens 1 and 4 are impossible
    rng = torch.Generator().manual_seed(1)
    counts = torch.bincount(torch.cat([draw(scores, False, rng)[0] for _ in range(4000)]), minlength=5)
    assert counts[1] == counts[4] == 0
    assert torch.allclose(counts.float() / 4000, torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0]), atol=0.03)


def test_a_character_tokenizer_s_tokens_are_looked_up_and_read_exactly_as_decoding_them(char_tokenizer):
    """The decoder takes a character tokenizer's texts from a table (no decoding a token); what it hands out is
    what decoding the whole text gives. A byte-level BPE, whose characters can span tokens, keeps decoding."""
    from textgen.local.generation import IncrementalDecoder, _letter_pieces
    from textgen.local.tokenization import train_bpe_tokenizer

    assert _letter_pieces(char_tokenizer) is not None
    ids = torch.randint(0, len(char_tokenizer), (300,), generator=torch.Generator().manual_seed(3)).tolist()
    decoder = IncrementalDecoder(char_tokenizer, [])
    assert "".join(decoder.push(i) for i in ids) == char_tokenizer.decode(ids)
    bpe = train_bpe_tokenizer(["naïve café — “quoted” ROMEO: O, speak again"], vocab_size=280)
    assert _letter_pieces(bpe) is None
    text = "café — “quoted”"
    decoder = IncrementalDecoder(bpe, [])
    assert "".join(decoder.push(i) for i in bpe(text)["input_ids"]) == text
