"""One training in a process of its own, for the page's Train tab (textgen/service/training.py starts it).

    echo '{"config": {"arch": "lstm", "data": "text.txt", "out": "runs/mine", "time_budget": 20}}' \
        | python -m textgen.training.worker

It reads one JSON request from its standard input: `config` (TrainConfig's fields), `report_every` (seconds between
progress records, default 3) and `sample_prompt`. It writes JSON lines to its standard output, one object each:
`{"record": {...}}` for every progress record (textgen.training.trainer.Trainer's), then `{"done": summary}` or
`{"error": message}`. The line "stop" on its standard input, or the end of that input (the server went away),
ends the training at the next step with its best weights kept. Anything else it prints (the progress bar,
accelerate's lines) goes to its standard error, which the server keeps as the run's log.

Why a process: training holds a core for minutes; in a process of its own, with one thread and a lower priority,
it cannot slow the server's threads (Gradio's, the models' schedulers) nor hold Python's lock while visitors write.
"""

from __future__ import annotations

import json
import os
import sys
import threading

# Serving visitors comes first: the server writes their texts at its normal priority, the training takes what is left.
NICENESS = 10


def main() -> int:
    records = os.fdopen(os.dup(1), "w", buffering=1)  # JSON lines for the server alone...
    os.dup2(2, 1)  # ...and every other print (accelerate's, the bar) to the log
    try:
        request = json.loads(sys.stdin.readline() or "{}")
        config = dict(request["config"])
    except (ValueError, KeyError, TypeError) as err:
        records.write(json.dumps({"error": f"a bad training request: {err}"}) + "\n")
        return 2
    stop = threading.Event()

    def listen() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()  # "stop", or the end of the input: the server that asked is gone

    threading.Thread(target=listen, daemon=True).start()
    try:
        os.nice(NICENESS)
    except OSError:
        pass
    # torch only now: the request is read and the process is at its priority
    from textgen.training.config import TrainConfig
    from textgen.training.trainer import train

    def report(record: dict) -> None:
        records.write(json.dumps({"record": record}) + "\n")

    try:
        summary = train(TrainConfig(**{"threads": 1, **config}), report=report,
                        report_every=float(request.get("report_every", 3.0)), stop=stop.is_set,
                        sample_prompt=str(request.get("sample_prompt", "")))
    except (ValueError, OSError, TypeError) as err:  # what a bad text or setting can cause, in words
        records.write(json.dumps({"error": str(err)}) + "\n")
        return 1
    records.write(json.dumps({"done": summary}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
