"""User mistakes that once printed many lines are one line: a captioning model that cannot load (a library's
message, without its web addresses), a feature tensor of integers."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import featscope
from featscope.errors import FeatscopeError, reason
from featscope.targets import load_feature_file
from processes import featscope_child, finish, reaped

EXAMPLES = Path(__file__).parent.parent / "examples"


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("featscope: error: "), stderr[-3000:]
    return lines[0]


class _NotFound(http.server.BaseHTTPRequestHandler):
    """A hub that has nothing: every file is 404."""

    def do_HEAD(self) -> None:  # noqa: N802 (the handler's name for HEAD requests)
        self.send_response(404)
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args) -> None:
        pass


def test_a_captioning_model_the_hub_does_not_have_is_one_line_without_web_addresses(tmp_path):
    """Online, against a local hub that answers 404: the library's message names the hub's address."""
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{hub.server_address[1]}"
    try:
        child = featscope_child("invert", str(EXAMPLES / "yellow-star.png"), "--caption-model", "nosuchdir",
                                "--device", "cpu", "--quiet", "--out", "inv", cwd=tmp_path, HF_HUB_OFFLINE="0",
                                HF_ENDPOINT=endpoint)  # fmt: skip
        with reaped(child):
            _, stderr = finish(child, 300)
    finally:
        hub.shutdown()
    line = one_error_line(stderr)
    assert child.returncode == 2 and "cannot load the captioning model 'nosuchdir'" in line
    assert "://" not in line and "127.0.0.1" not in line, line
    assert not (tmp_path / "inv").exists()


def test_a_library_message_is_one_line_without_its_web_addresses():
    from transformers import AutoProcessor

    with pytest.raises(OSError) as raised:  # not cached, and the hub not asked: a two-line message with addresses
        AutoProcessor.from_pretrained("nobody/no-such-captioner", local_files_only=True)
    assert "://" in str(raised.value)
    line = reason(raised.value)
    assert line.startswith("OSError: ") and "\n" not in line and "://" not in line, line


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_a_feature_tensor_of_integers_is_refused_in_one_line(tmp_path, featscope_main, suffix):
    path = tmp_path / f"ints{suffix}"
    ints = np.arange(128, dtype=np.int64)
    np.save(path, ints) if suffix == ".npy" else torch.save(torch.from_numpy(ints), path)
    result = featscope_main("decode", "--target", str(path), "--quiet", "--out", str(tmp_path / "run"))
    line = one_error_line(result.stderr)
    assert result.returncode == 2 and "int64 values, not floating-point features" in line, line
    assert not (tmp_path / "run").exists()
    with pytest.raises(FeatscopeError, match="int64 values"):
        load_feature_file(path)


def test_an_in_memory_feature_of_integers_is_refused():
    with pytest.raises(FeatscopeError, match="target tensor #0 holds int32 values"):
        featscope.decode(features=torch.ones(1, 128, dtype=torch.int32), num_steps=1, device="cpu", quiet=True)
    with pytest.raises(FeatscopeError, match="bool values"):
        featscope.decode(features=torch.ones(1, 128, dtype=torch.bool), num_steps=1, device="cpu", quiet=True)
