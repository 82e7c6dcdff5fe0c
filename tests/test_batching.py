"""Many requests to one model at once: written together, one forward pass a token, each exactly as alone."""

import os
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from textgen.core.events import Summary, TextEvent, Waiting
from textgen.core.settings import GenerationSettings, Limits
from textgen.local.batching import Busy, Forward, Scheduler, step_together
from textgen.local.devices import StepThreads
from textgen.local.generation import Run, stream
from textgen.models import contract

# Sixteen requests as a class would send them: different prompts, controls, seeds, lengths and sample counts.
REQUESTS = [
    dict(prompt=prompt, seed=seed, **controls)
    for seed, (prompt, controls) in enumerate([
        ("ROMEO:", dict(max_new_tokens=60)),
        ("JULIET:", dict(max_new_tokens=45, temperature=0.7)),
        ("First Citizen:", dict(max_new_tokens=80, top_k=5)),
        ("", dict(max_new_tokens=30, top_p=0.8)),
        ("KING HENRY", dict(max_new_tokens=70, min_p=0.1, temperature=1.3)),
        ("O, ", dict(max_new_tokens=50, repetition_penalty=1.3)),
        ("What", dict(max_new_tokens=64, no_repeat_ngram_size=3)),
        ("Good morrow", dict(max_new_tokens=90, stop=["\n\n"])),
        ("Thou", dict(max_new_tokens=40, temperature=0)),
        ("Hark", dict(max_new_tokens=55, num_samples=3)),
        ("My lord", dict(max_new_tokens=20, num_samples=2, temperature=0.9)),
        ("Now is the winter", dict(max_new_tokens=100, top_k=40, top_p=0.95)),
        ("To be", dict(max_new_tokens=35, temperature=0.5, repetition_penalty=1.1)),
        ("A horse", dict(max_new_tokens=75, stop=["."])),
        ("Speak", dict(max_new_tokens=10)),
        ("MENENIUS:", dict(max_new_tokens=66, alternatives=3)),
    ], start=1)
]


def settings_of(request: dict) -> GenerationSettings:
    controls = dict(request)
    return GenerationSettings.parse(controls.pop("prompt"), **controls)


def written(events) -> tuple[list[int], list[str]]:
    summary = events[-1]
    assert isinstance(summary, Summary)
    return [e.token.id for e in events if isinstance(e, TextEvent) and e.token is not None], summary.texts


def all_at_once(loaded, requests: list[dict], cancels=None) -> list[list]:
    """Every request in its own thread, released together; each one's events."""
    results: list = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def one(i: int) -> None:
        start.wait()
        results[i] = list(stream(loaded, settings_of(requests[i]), cancels[i] if cancels else None))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn", "transformer"])
def test_sixteen_requests_at_once_write_exactly_what_each_writes_alone(manager, name):
    loaded = manager.get(name)
    alone = [written(list(stream(loaded, settings_of(r)))) for r in REQUESTS]
    loaded.scheduler.batch_rows.clear()
    together = [written(events) for events in all_at_once(loaded, REQUESTS)]
    assert together == alone
    # ...and they really were written together: most steps took rows of several requests.
    rows = loaded.scheduler.batch_rows
    assert max(rows) > 8, rows
    assert sum(n for size, n in rows.items() if size > 1) > sum(rows.values()) / 2, rows


def test_the_padding_keeps_a_row_the_same_in_a_batch_of_any_size(manager):
    """The rule the exactness rests on (textgen.local.batching): a row's logits do not depend on how many rows share
    the step, nor on what the other rows hold."""
    model = manager.get("lstm").model
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (13, 9), generator=generator)
    with torch.inference_mode():
        _, memory = contract.step(model, ids, contract.start_memory(model, 13))
        rows = contract.split_memory(model, memory, [1] * 13)
        last = ids[:, -1:]
        alone = [step_together(model, [Forward(last[i : i + 1], rows[i])])[0] for i in range(13)]
        for size in (2, 3, 5, 8, 13):
            together = step_together(model, [Forward(last[i : i + 1], rows[i]) for i in range(size)])
            for (logits, state), (logits_alone, state_alone) in zip(together, alone):
                assert torch.equal(logits, logits_alone)
                assert all(torch.equal(a, b) for a, b in zip(state, state_alone))


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_a_recurrent_models_batch_on_two_threads_writes_exactly_what_each_writes_alone_on_one(manager, name,
                                                                                               monkeypatch):
    """Our recurrent models' batches may take both cores (batching._step_threads); a text alone keeps one. Forced
    here whatever the machine's other work, so that the batch's steps really run on two threads."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core here: no second thread to take")
    loaded = manager.get(name)
    alone = [written(list(stream(loaded, settings_of(r)))) for r in REQUESTS]
    scheduler = Scheduler(loaded.model)
    scheduler.threads = StepThreads(most=2, min_rows=8, others=SimpleNamespace(cores=lambda: 0.0))
    monkeypatch.setattr(loaded, "_scheduler", scheduler)
    counts: list[int] = []
    handle = loaded.model.register_forward_pre_hook(lambda module, args: counts.append(torch.get_num_threads()))
    try:
        together = [written(events) for events in all_at_once(loaded, REQUESTS)]
    finally:
        handle.remove()
    assert together == alone
    assert 2 in counts  # the batch's steps did run on two threads


def test_stop_ends_one_request_and_leaves_the_others_as_they_would_be_alone(manager):
    loaded = manager.get("lstm")
    requests = [dict(prompt=p, seed=s, max_new_tokens=600) for s, p in enumerate(["A", "B", "C", "D"], start=7)]
    alone = [written(list(stream(loaded, settings_of(r)))) for r in requests[1:]]
    cancels = [threading.Event() for _ in requests]
    threading.Timer(0.05, cancels[0].set).start()  # Stop, pressed while all four are writing
    results = all_at_once(loaded, requests, cancels)
    stopped = results[0][-1]
    assert stopped.stop_reasons == ["cancelled"] and stopped.tokens[0] < 600
    assert [written(events) for events in results[1:]] == alone


def test_a_reader_that_goes_away_leaves_the_batch_and_the_others_finish(manager):
    loaded = manager.get("gru")
    settings = GenerationSettings.parse("ROMEO:", max_new_tokens=400, seed=3)
    reference = written(list(stream(loaded, settings)))
    gone = stream(loaded, GenerationSettings.parse("JULIET:", max_new_tokens=1000, seed=4))
    next(gone)  # it is writing...
    with_it = threading.Thread(target=lambda: result.append(written(list(stream(loaded, settings)))))
    result: list = []
    with_it.start()
    gone.close()  # ...and its page is closed
    with_it.join(timeout=60)
    assert result == [reference]
    deadline = threading.Event()
    for _ in range(100):  # the scheduler notices at its next round and has nothing left to do
        if loaded.scheduler.load == (0, 0):
            break
        deadline.wait(0.05)
    assert loaded.scheduler.load == (0, 0)


def test_a_full_model_queues_requests_says_their_place_then_refuses_more(manager, monkeypatch):
    loaded = manager.get("rnn")
    scheduler = Scheduler(loaded.model, Limits(max_batch=1, max_waiting=1))
    monkeypatch.setattr(loaded, "_scheduler", scheduler)
    first = stream(loaded, GenerationSettings.parse("A", max_new_tokens=1000, seed=1))
    next(first)  # writing: the only row there is
    second = stream(loaded, GenerationSettings.parse("B", max_new_tokens=5, seed=2))
    assert next(second) == Waiting(0)  # its place: next
    third = stream(loaded, GenerationSettings.parse("C", max_new_tokens=5, seed=3))
    with pytest.raises(Busy, match="try again in a moment"):
        next(third)
    first.close()  # the first one's reader leaves: the second one's turn
    rest = list(second)
    assert rest[0] == Waiting(0, over=True)
    assert isinstance(rest[-1], Summary) and rest[-1].tokens == [5]


def test_a_long_prompt_is_read_in_pieces_between_the_others_steps(manager):
    loaded = manager.get("lstm")
    order: list[int] = []  # the input length of each forward step, in order
    handle = loaded.model.register_forward_hook(
        lambda module, args, kwargs, out: order.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        writing = stream(loaded, GenerationSettings.parse("ROMEO:", max_new_tokens=1000, seed=1))
        next(writing)
        long_prompt = list(stream(loaded, GenerationSettings.parse("a b c d " * 400, max_new_tokens=3, seed=2)))
        writing.close()
    finally:
        handle.remove()
    assert isinstance(long_prompt[-1], Summary)
    pieces = [i for i, length in enumerate(order) if length > 1][1:]  # the first is "ROMEO:" itself
    assert len(pieces) >= 12  # 3,200 characters, 256 a piece
    assert all(1 in order[a + 1 : b] for a, b in zip(pieces, pieces[1:]))  # decode steps came in between


def test_a_crowds_short_prompts_are_read_in_the_same_round(manager, monkeypatch):
    """A class pressing Generate together: their prompts are all read in the round after they arrive (each
    alone, so each text is exactly as alone), instead of one prompt a round while the others wait to start."""
    import textgen.local.batching as batching

    steps, real = [], batching.step_together

    def step_together(model, asks):
        steps.append("decode" if asks[0].is_decode else "prompt")
        if len(steps) == 1:
            time.sleep(1.0)  # the first prompt's step: the others arrive meanwhile and wait for the next round
        return real(model, asks)

    monkeypatch.setattr(batching, "step_together", step_together)
    results = all_at_once(manager.get("lstm"), [dict(prompt=f"Hark {i}", seed=i, max_new_tokens=5) for i in range(8)])
    assert all(isinstance(events[-1], Summary) for events in results)
    second_decode = [i for i, kind in enumerate(steps) if kind == "decode"][1]
    assert steps[:second_decode].count("prompt") >= 6  # one a round would have read 2 by then


def test_a_failing_step_fails_its_requests_in_words_and_the_model_serves_the_next(manager, monkeypatch):
    loaded = manager.get("rnn")
    monkeypatch.setattr(loaded, "_scheduler", Scheduler(loaded.model))  # no other test's request in its batch
    real_step, failures = contract.step, []

    def broken_once(model, input_ids, memory, all_logits=False):
        # This model's step only: another test's model may still take a last round after its reader left.
        if model is loaded.model and input_ids.shape[1] == 1 and not failures:
            failures.append(1)
            raise RuntimeError("a broken kernel")
        return real_step(model, input_ids, memory, all_logits)

    monkeypatch.setattr(contract, "step", broken_once)
    with pytest.raises(RuntimeError, match="a broken kernel"):
        list(stream(loaded, GenerationSettings.parse("A", max_new_tokens=20, seed=1)))
    events = list(stream(loaded, GenerationSettings.parse("A", max_new_tokens=20, seed=1)))
    assert events[-1].tokens == [20]


def test_a_transformers_texts_keep_their_own_caches_in_a_batch(manager):
    """Our Transformer batches its decode steps with a cache per text (`step_rows`): texts of very different
    lengths, one of them past the context (refilled from its recent half), each exactly as alone."""
    loaded = manager.get("transformer")
    requests = [dict(prompt="ROMEO:", seed=1, max_new_tokens=150), dict(prompt="O" * 40, seed=2, max_new_tokens=20),
                dict(prompt="", seed=3, max_new_tokens=60, num_samples=2),
                dict(prompt="What", seed=4, max_new_tokens=5)]
    alone = [written(list(stream(loaded, settings_of(r)))) for r in requests]
    loaded.scheduler.batch_rows.clear()
    assert [written(events) for events in all_at_once(loaded, requests)] == alone
    assert max(loaded.scheduler.batch_rows) > 1


def test_the_step_view_takes_the_same_steps_as_a_batch(manager):
    """Run.events answers its own steps through the same padded step: the same text as through the scheduler."""
    loaded = manager.get("gru")
    settings = GenerationSettings.parse("JULIET:", max_new_tokens=50, seed=11, temperature=0.8)
    direct = list(Run(loaded, settings, threading.Event()).events())
    assert written(direct) == written(list(stream(loaded, settings)))


def test_requests_with_the_same_controls_are_sampled_together_and_exactly_as_alone(manager, monkeypatch):
    """A class on the page's default style: one set of controls, sixteen prompts and seeds. Their controls are
    applied to all their rows at once (prompts of different lengths included), and each text is as alone."""
    import textgen.local.batching as batching

    loaded = manager.get("lstm")
    requests = [dict(prompt="ROMEO:\n" * (1 + i % 5), seed=i, max_new_tokens=40, temperature=0.8, top_p=0.95,
                     repetition_penalty=1.3) for i in range(16)]
    alone = [written(list(stream(loaded, settings_of(r)))) for r in requests]
    sizes: list[int] = []
    real = batching.process_together
    monkeypatch.setattr(batching, "process_together", lambda asks: sizes.append(len(asks)) or real(asks))
    assert [written(events) for events in all_at_once(loaded, requests)] == alone
    assert max(sizes) == 16 and sum(s > 1 for s in sizes) > len(sizes) / 2, sizes


def test_the_no_repeat_rule_is_applied_to_each_request_alone(manager, monkeypatch):
    import textgen.local.batching as batching

    loaded = manager.get("gru")
    requests = [dict(prompt="To be", seed=i, max_new_tokens=30, no_repeat_ngram_size=2) for i in range(4)]
    alone = [written(list(stream(loaded, settings_of(r)))) for r in requests]
    sizes: list[int] = []
    real = batching.process_together
    monkeypatch.setattr(batching, "process_together", lambda asks: sizes.append(len(asks)) or real(asks))
    assert [written(events) for events in all_at_once(loaded, requests)] == alone
    assert set(sizes) == {1}


def test_a_hugging_face_model_batches_texts_of_different_lengths_with_a_padded_cache(manager):
    """GPT-2 and its kind: the texts' caches are joined, left-padded, for one step and split again. Not exact
    (attention over padded lengths rounds differently) but the same numbers to float precision."""
    model = manager.get("tiny-gpt2").model
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, model.config.vocab_size, (rows, length), generator=generator)
               for rows, length in [(1, 3), (2, 11), (1, 7)]]
    with torch.inference_mode():
        memories = [contract.step(model, ids, contract.start_memory(model))[1] for ids in prompts]
        new = torch.randint(0, model.config.vocab_size, (4, 1), generator=generator)
        alone = []
        for (a, b), ids in zip([(0, 1), (1, 3), (3, 4)], prompts):
            _, memory = contract.step(model, ids, contract.start_memory(model))
            alone.append(contract.step(model, new[a:b], memory))
        rows = [(0, 1), (1, 3), (3, 4)]
        together = step_together(model, [Forward(new[a:b], m) for (a, b), m in zip(rows, memories)])
    for (logits, memory), (logits_alone, memory_alone) in zip(together, alone):
        assert torch.allclose(logits, logits_alone, atol=1e-5)
        assert memory.get_seq_length() == memory_alone.get_seq_length()
        assert torch.allclose(memory.layers[0].keys, memory_alone.layers[0].keys, atol=1e-5)


def test_a_hugging_face_model_reads_several_texts_first_tokens_in_one_step(manager):
    """A class's prompts to GPT-2 and its kind: read together, left-padded, each text's numbers and cache those of
    its prompt read alone (to float precision), and its next step goes on from there."""
    model = manager.get("tiny-gpt2").model
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, model.config.vocab_size, (rows, length), generator=generator)
               for rows, length in [(1, 1), (2, 9), (1, 4)]]
    with torch.inference_mode():
        alone = [contract.step(model, ids, contract.start_memory(model)) for ids in prompts]
        together = step_together(model, [Forward(ids, contract.start_memory(model)) for ids in prompts])
        for (logits, memory), (logits_alone, memory_alone), ids in zip(together, alone, prompts):
            assert torch.allclose(logits, logits_alone, atol=1e-5)
            assert memory.get_seq_length() == memory_alone.get_seq_length() == ids.shape[1]
            assert torch.allclose(memory.layers[-1].values, memory_alone.layers[-1].values, atol=1e-5)
            new = torch.zeros((ids.shape[0], 1), dtype=torch.long)
            assert torch.allclose(contract.step(model, new, memory)[0], contract.step(model, new, memory_alone)[0],
                                  atol=1e-5)


def test_a_crowds_prompts_to_a_hugging_face_model_are_read_in_one_step(manager, monkeypatch):
    import textgen.local.batching as batching

    loaded = manager.get("tiny-gpt2")
    monkeypatch.setattr(loaded, "_scheduler", Scheduler(loaded.model))
    steps, real = [], batching.step_together

    def step_together(model, asks):
        steps.append([contract.is_fresh(ask.memory) for ask in asks])
        if len(steps) == 1:
            time.sleep(1.0)  # the first text's prompt: the others arrive meanwhile and wait for the next round
        return real(model, asks)

    monkeypatch.setattr(batching, "step_together", step_together)
    requests = [dict(prompt="ROMEO " * (1 + i), seed=i, max_new_tokens=5) for i in range(6)]
    results = all_at_once(loaded, requests)
    assert all(isinstance(events[-1], Summary) for events in results)
    first_reads = [len(step) for step in steps if all(step)]
    assert sum(first_reads) == 6 and len(first_reads) <= 2, steps  # read one by one, that would be 6 steps


def test_a_hugging_face_model_writes_several_requests_together(manager):
    loaded = manager.get("tiny-gpt2")
    requests = [dict(prompt="ROMEO" * (1 + i), seed=i, max_new_tokens=30) for i in range(6)]
    loaded.scheduler.batch_rows.clear()
    results = all_at_once(loaded, requests)
    assert all(events[-1].tokens[0] == 30 or events[-1].stop_reasons == ["end_of_text"] for events in results)
    assert max(loaded.scheduler.batch_rows) > 1


def test_the_step_view_steps_the_model_in_its_scheduler_too(manager):
    """One way to the model: the step-by-step view's forward steps are taken by the model's scheduler thread,
    in turn with the texts being written, never from the request's own thread."""
    from textgen.service import explain

    loaded = manager.get("gru")
    threads: set[str] = set()
    handle = loaded.model.register_forward_pre_hook(lambda module, args: threads.add(threading.current_thread().name))
    try:
        session = explain.StepSession(loaded, "ROMEO:")
        session.run(5, {"seed": 1})
    finally:
        handle.remove()
    assert threads == {"textgen-scheduler"}


def test_a_hugging_face_batch_of_long_texts_is_cut_so_that_its_joined_cache_stays_bounded(manager, monkeypatch):
    import textgen.local.batching as batching

    loaded = manager.get("tiny-gpt2")
    monkeypatch.setattr(batching, "PADDED_PLACES", 60)  # rows x longest text: two texts of ~25 tokens at most
    monkeypatch.setattr(loaded, "_scheduler", Scheduler(loaded.model))
    requests = [dict(prompt="ROMEO " * 4, seed=i, max_new_tokens=12) for i in range(4)]
    results = all_at_once(loaded, requests)
    assert all(isinstance(events[-1], Summary) for events in results)
    rows = loaded.scheduler.batch_rows
    assert max(rows) <= 2 and sum(rows.values()) > 0, rows


def test_caches_that_cannot_be_joined_still_take_turns_every_round(manager, monkeypatch):
    """A Hugging Face model whose caches cannot be joined (a sliding window's) steps each text alone, but every
    text every round: three at once all advance together, none waits for another to finish."""
    loaded = manager.get("tiny-gpt2")
    monkeypatch.setattr(contract, "joinable_caches", lambda memories: False)
    monkeypatch.setattr(loaded, "_scheduler", Scheduler(loaded.model))
    lengths: list[int] = []

    def hook(module, args, kwargs):
        cache = kwargs.get("past_key_values")
        lengths.append(cache.get_seq_length() if cache is not None else 0)

    handle = loaded.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        results = all_at_once(loaded, [dict(prompt="ROMEO", seed=i, max_new_tokens=20) for i in range(3)])
    finally:
        handle.remove()
    assert all(isinstance(events[-1], Summary) for events in results)
    # One after another, each text's cache would grow to its end before the next began: a run of 20 steps each
    # one token longer than the last. Taking turns, the runs are short (5, 5, 5, 6, 6, 6, ... in lockstep).
    run = longest = 1
    for earlier, later in zip(lengths, lengths[1:]):
        run = run + 1 if later > earlier else 1
        longest = max(longest, run)
    assert longest <= 4 and max(lengths) >= 20, lengths


def test_a_patient_reader_gets_the_same_events_in_bunches_and_its_end_at_once(manager):
    """A page shown at a pace lets a text's events gather between its looks (its thread does not wake at every
    token), and still hears at once when the text ends."""
    loaded = manager.get("lstm")
    request = dict(prompt="First", seed=3, max_new_tokens=60)
    alone = written(list(stream(loaded, settings_of(request))))
    looks: list[float] = []

    def patience() -> float:  # a reader that, after its first look, could wait half a minute
        looks.append(time.monotonic())
        return 0.0 if len(looks) == 1 else 30.0

    started = time.monotonic()
    events = list(stream(loaded, settings_of(request), patience=patience))
    assert written(events) == alone
    assert time.monotonic() - started < 30  # its end woke it: it did not sit out its patience
    assert len(looks) <= 3  # 60 tokens, read in one or two bunches
