"""A model's batched steps may take more CPU threads where that is measured faster (devices.StepThreads)."""

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from textgen.local.devices import OtherWork, StepThreads, process_threads


class Quiet:
    """No other program at work on this machine (the suite's machine may be busy: the choice is tested alone)."""

    def __init__(self, busy: float = 0.0):
        self.busy = busy

    def cores(self) -> float:
        return self.busy


def test_a_text_alone_keeps_the_process_count_and_a_batch_starts_on_all_the_cores():
    threads = StepThreads(most=2, others=Quiet())
    assert threads.choose(rows=1) == threads.base
    assert threads.choose(rows=3) == threads.base  # below 4 rows a step waits on reading the weights
    if threads.most > threads.base:
        assert threads.choose(rows=8) == threads.most


def test_the_slower_count_is_left_and_tried_again_every_so_often():
    threads = StepThreads(most=2, recheck=8, others=Quiet())
    if threads.most == threads.base:
        pytest.skip("one core here: there is no second count to choose")
    many, few = threads.most, threads.base
    # on a busy machine the second thread stalls every product: all the cores take 3x as long
    seen = []
    for _ in range(40):
        count = threads.choose(rows=8)
        seen.append(count)
        threads.record(8, count, 0.3 if count == many else 0.1)
    assert seen[:7] == [many] * 7  # no measurement of one thread yet: all the cores
    assert seen[7:9] == [few, few]  # the recheck: one thread, twice
    assert set(seen[9:15]) == {few}  # measured faster, so kept
    assert seen[15:17] == [many, many]  # and all the cores tried again later
    assert seen[17:23] == [few] * 6  # still slower: back to one
    # each size of batch is judged by its own steps: 16 rows have not been measured yet
    assert threads.choose(rows=16) == many


def test_the_count_is_set_in_the_scheduler_thread_only_and_put_back_after_the_step():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core here")
    threads = StepThreads(most=2, others=Quiet())
    inside = []

    def scheduler() -> None:
        with threads.around(rows=8):
            inside.append(torch.get_num_threads())
        inside.append(torch.get_num_threads())

    worker = threading.Thread(target=scheduler)
    worker.start()
    worker.join()
    assert inside == [2, threads.base]
    assert torch.get_num_threads() == process_threads()


def test_a_text_alone_keeps_one_count_and_our_transformer_keeps_it_throughout(manager):
    """Our Transformer's layers round differently on two threads, and its texts are promised bit for bit the same
    in any batch; our recurrent models' batches of 8 rows may take more (tests/test_batching.py checks they stay
    exact), a text alone (4 padded rows) not; a Hugging Face model's from 4 rows."""
    transformer = manager.get("transformer").scheduler.threads
    lstm, theirs = manager.get("lstm").scheduler.threads, manager.get("tiny-gpt2").scheduler.threads
    assert transformer.most == transformer.base
    if (os.cpu_count() or 1) >= 2 and "TEXTGEN_STEP_THREADS" not in os.environ:
        assert theirs.most > theirs.base and lstm.most > lstm.base
        assert lstm.min_rows == 8 and theirs.min_rows == 4


def test_no_second_thread_while_another_program_keeps_a_core_busy():
    others = Quiet(busy=1.0)  # say, a browser or a training on the other core
    threads = StepThreads(most=2, others=others)
    assert threads.choose(rows=8) == threads.base
    others.busy = 0.1
    assert threads.choose(rows=8) == threads.most


def test_other_programs_work_is_read_from_the_machine_without_counting_ours():
    if not Path("/proc/stat").exists() or not Path("/proc/self/stat").exists():
        pytest.skip("no /proc here: other programs' work is taken as none")
    others = OtherWork(every=0.0)
    time.sleep(0.5)
    resting = others.cores()  # whatever else this machine is doing
    end = time.monotonic() + 0.5
    while time.monotonic() < end:  # now this process keeps a core busy: that is not another program's work
        pass
    assert others.cores() < resting + 0.7


def test_one_step_at_a_time_takes_the_extra_cores():
    """Two models' batches at once: the first takes all the cores, the second keeps the process's count."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core here")
    first, second = StepThreads(most=2, others=Quiet()), StepThreads(most=2, others=Quiet())
    counts = []
    with first.around(rows=8) as wide:
        with second.around(rows=8) as narrow:
            counts += [wide, narrow]
    with second.around(rows=8) as after:
        counts.append(after)
    assert counts == [2, second.base, 2]


def test_a_mistyped_setting_falls_back_to_all_the_cores(monkeypatch, caplog):
    monkeypatch.setenv("TEXTGEN_STEP_THREADS", "two")
    threads = StepThreads(others=Quiet())  # a model still loads
    assert threads.most >= threads.base
    assert "TEXTGEN_STEP_THREADS='two' is not a whole number of threads" in caplog.text
    monkeypatch.setenv("TEXTGEN_STEP_THREADS", "1")
    assert StepThreads(others=Quiet()).most == StepThreads(most=1).base


def test_choosing_a_large_batchs_tokens_takes_all_the_cores_when_they_are_free_and_gives_them_back():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core here")
    threads = StepThreads(most=2, others=Quiet())
    with threads.wide(8 * 50_257) as taken:  # 8 rows of GPT-2's scores
        assert taken == torch.get_num_threads() == threads.most
    assert torch.get_num_threads() == threads.base
    with threads.wide(16 * 65) as taken:  # 16 rows of a character model's: not worth a second thread
        assert taken == threads.base
    with StepThreads(most=2, others=Quiet(busy=1.0)).wide(8 * 50_257) as taken:  # another program has a core
        assert taken == threads.base
    with threads.around(rows=8), threads.wide(8 * 50_257) as taken:  # one wide piece of work at a time
        assert taken == threads.base
