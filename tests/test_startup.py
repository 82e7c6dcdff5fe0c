"""`python app.py` itself: starts offline, serves the page, and says nothing alarming."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_python_app_py_serves_the_page_offline():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    start = time.monotonic()
    try:
        status = None
        while time.monotonic() - start < 60 and proc.poll() is None:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status
                break
            except OSError:
                time.sleep(0.25)
        elapsed = time.monotonic() - start
        assert status == 200, f"no page after {elapsed:.0f} s"
        # The bar is 15 s on an idle machine; the test suite runs beside other work, so allow slack here
        # and measure the real number with `python benchmarks/startup.py`.
        assert elapsed < 40
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert "Traceback" not in output
