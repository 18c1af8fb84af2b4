"""No raw temp copy survives a decoder child: decord needs a local path, so a remote video is copied to local disk
(anon_core.video.source.open_source) inside the child, and a child killed on a timeout, crashing or killed from
outside cannot delete that copy itself. Its parent must (anon_core.video.isolation)."""

from __future__ import annotations

import faulthandler
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

from anon_core.video import DecodeFailure, DecoderProcess, VideoDecodeError, run_isolated
from anon_core.video.source import open_source

HANG_TIMEOUT_S = 15.0  # room for a fresh child to start and copy the video on a loaded 2-core machine


def copy_then(uri: str, outcome: str, evidence: str) -> int:
    """In the child: take the local copy a decord decode takes, note where it lies, then end as `outcome` says."""
    with open_source(uri, need_path=True) as path:
        Path(evidence).write_text(path)
        if outcome == "hang":  # a decoder stuck on a hostile stream: the parent kills it at the timeout
            time.sleep(600)
        elif outcome == "crash":  # a decoder bug
            faulthandler._sigsegv()
        elif outcome == "kill":  # the OOM killer, an operator
            os.kill(os.getpid(), signal.SIGKILL)
        return os.path.getsize(path)


@pytest.fixture
def remote_video(s3_endpoint, indexed_videos) -> str:
    """A video on the local S3 server (a child process cannot see the parent's memory://)."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if not fs.exists("decoder-tmp"):
        fs.mkdir("decoder-tmp")
    fs.put_file(str(indexed_videos["h264"]), "decoder-tmp/v.mp4")
    return "s3://decoder-tmp/v.mp4"


@pytest.fixture
def temp_root(tmp_path, monkeypatch) -> Path:
    """The system temp dir, for this process and the children it spawns: whatever lands there is ours to inspect."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setenv("TMPDIR", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


EXPECTED = {"hang": DecodeFailure.TIMEOUT, "crash": DecodeFailure.DECODER_CRASH, "kill": DecodeFailure.DECODER_CRASH}


def call_isolated(outcome: str, uri: str, evidence: Path):
    return run_isolated(copy_then, uri, outcome, str(evidence), uri=uri, timeout_s=HANG_TIMEOUT_S)


def call_decoder_process(outcome: str, uri: str, evidence: Path):
    decoder = DecoderProcess(timeout_s=HANG_TIMEOUT_S)
    try:
        return decoder.call(copy_then, uri, outcome, str(evidence), uri=uri)
    finally:
        decoder.close()


@pytest.mark.parametrize("outcome", sorted(EXPECTED))
@pytest.mark.parametrize("call", [call_isolated, call_decoder_process], ids=["run_isolated", "DecoderProcess"])
def test_no_temp_copy_survives_a_decoder_that_dies(call, outcome, remote_video, temp_root, tmp_path):
    evidence = tmp_path / "copy_was_at.txt"  # outside temp_root
    with pytest.raises(VideoDecodeError) as info:
        call(outcome, remote_video, evidence)
    assert info.value.reason == EXPECTED[outcome], info.value
    assert evidence.exists(), "the child never made its copy: the test proved nothing"
    copy = Path(evidence.read_text())
    assert copy.is_relative_to(temp_root) and copy.suffix == ".mp4"
    assert not copy.exists(), f"the raw copy {copy} outlived its decoder child"
    assert list(temp_root.rglob("*")) == []  # nor the child's temp folder


def test_a_long_lived_decoder_child_leaves_nothing_after_a_normal_call_and_close(remote_video, temp_root, tmp_path):
    decoder = DecoderProcess(timeout_s=120)
    try:
        assert decoder.call(copy_then, remote_video, "return", str(tmp_path / "copy.txt")) > 0
        assert [p for p in temp_root.rglob("*") if p.is_file()] == []  # open_source removed its copy itself
    finally:
        decoder.close()
    assert list(temp_root.rglob("*")) == []


def test_a_dead_parents_temp_folder_goes_when_the_next_decoder_child_starts(temp_root):
    """A Ray worker killed mid-decode (at Ray's shutdown, by the OOM killer) cannot remove its child's folder; the next
    decoder child started on the machine does. Folders of live processes stay."""
    import multiprocessing as mp
    import socket

    gone = mp.get_context("spawn").Process(target=abs, args=(-1,))
    gone.start()
    gone.join()
    host = socket.gethostname()
    orphan = temp_root / f"anonvid-decoder-{host}-{gone.pid}-abc123"
    orphan.mkdir()
    (orphan / "anonvid-x.mp4").write_bytes(b"raw video bytes")
    alive = temp_root / f"anonvid-decoder-{host}-{os.getpid()}-def456"  # ours, in use
    alive.mkdir()
    other = temp_root / "unrelated-999999"
    other.mkdir()

    assert run_isolated(abs, -2, timeout_s=60) == 2
    assert not orphan.exists()
    assert alive.is_dir() and other.is_dir()
