"""The hub served read-only over smart HTTP (`git.serve`) and the gate worker's mirror fetched from it (`git.mirror`).

A real bare hub with dangling commits (stacked on main, no ref on them, as the merge queue makes), the
server in a thread on a free loopback port, the real git client.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agentswarm.errors import ConfigError
from agentswarm.git.mirror import FETCHED_PREFIX, fetch_shas
from agentswarm.git.repo import GitError
from agentswarm.git.serve import pkt_line, serve_hub
from tests.git.hubkit import commit, git, new_hub, read

TOKEN = "hub-serve-token-0123456789abcdef"
WRONG = "not-the-token-fedcba9876543210"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(tmp_path, caplog):
    """(url, hub, main, [dangling1, dangling2]): the hub served on 127.0.0.1 with TOKEN, logging at DEBUG."""
    caplog.set_level(logging.DEBUG, logger="agentswarm.git.serve")
    hub, main = new_hub(tmp_path / "hub.git", {"a.txt": "one\n"})
    first = commit(hub, main, {"b.txt": "two\n"}, message="stacked 1")
    second = commit(hub, first, {"c.txt": "three\n"}, message="stacked 2")
    server = serve_hub(hub, "127.0.0.1:0", TOKEN)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        assert server.url == f"http://127.0.0.1:{server.server_address[1]}/hub.git"
        yield server.url, hub, main, [first, second]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _state(hub: Path) -> str:
    """Every ref and every object of the hub: what a write would change."""
    return git(hub, "for-each-ref") + "\n" + git(hub, "cat-file", "--batch-all-objects", "--batch-check")


def _request(url: str, method: str, path: str, *, token: str | None = TOKEN, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    host, port = url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        sent = {**({"Authorization": f"Bearer {token}"} if token is not None else {}), **(headers or {})}
        conn.request(method, path, body=body, headers=sent, encode_chunked="Transfer-Encoding" in sent)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def test_fetch_shas_gets_a_dangling_commit_by_sha(served, tmp_path, caplog):
    url, hub, main, (first, second) = served
    assert git(hub, "for-each-ref", "--contains", first) == ""  # dangling: no ref reaches it
    mirror = tmp_path / "gate" / "mirror.git"
    fetch_shas(url, TOKEN, mirror, [second])
    assert read(mirror, second, "c.txt") == "three\n" and read(mirror, second, "a.txt") == "one\n"
    assert git(mirror, "rev-parse", f"{FETCHED_PREFIX}{second}") == second  # kept from gc by a ref
    # already there (its parent came with it): nothing is fetched, so even a dead URL is fine
    fetch_shas("http://127.0.0.1:9/hub.git", TOKEN, mirror, [first, second, second.upper()])
    fetch_shas(url, TOKEN, mirror, [main])
    # the token is in no file of the mirror (its config included) and in no log line of the server
    for path in [mirror.parent / "mirror.git.lock", *mirror.rglob("*")]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert "extraheader" not in (mirror / "config").read_text().lower()
    assert caplog.records and TOKEN not in caplog.text


def test_wrong_or_missing_token_is_refused(served, tmp_path, caplog):
    url, hub, _main, (first, _second) = served
    with pytest.raises(GitError, match="refused the token") as exc:
        fetch_shas(url, WRONG, tmp_path / "m.git", [first])
    assert url in str(exc.value) and WRONG not in str(exc.value)
    with pytest.raises(GitError, match="GATE_HUB_TOKEN"):
        fetch_shas(url, "", tmp_path / "m.git", [first])
    with pytest.raises(GitError, match="GATE_HUB_TOKEN"):
        fetch_shas(url, "a\r\nHost: evil", tmp_path / "m.git", [first])
    info = "/hub.git/info/refs?service=git-upload-pack"
    for token, headers in ((None, {}), (WRONG, {}), (TOKEN[:-1], {}), ("", {}),
                           (None, {"Authorization": f"Basic {TOKEN}"}), (f"{TOKEN} ", {"X": "1"})):
        status, _ = _request(url, "GET", info, token=token, headers=headers)
        assert status == (200 if token == f"{TOKEN} " else 401), (token, headers)
    assert _request(url, "GET", info)[0] == 200
    assert WRONG not in caplog.text and TOKEN not in caplog.text


def test_server_down_names_the_url(tmp_path):
    with pytest.raises(GitError, match=r"http://127\.0\.0\.1:9/hub\.git") as exc:
        fetch_shas("http://127.0.0.1:9/hub.git", TOKEN, tmp_path / "m.git", ["a" * 40])
    assert TOKEN not in str(exc.value)
    for bad in ("file:///etc", "ext::sh -c id", "http://user:pw@127.0.0.1:9/hub.git", "-u"):
        with pytest.raises(GitError, match="URL"):
            fetch_shas(bad, TOKEN, tmp_path / "m.git", ["a" * 40])
    with pytest.raises(GitError, match="not full commit ids"):
        fetch_shas("http://127.0.0.1:9/hub.git", TOKEN, tmp_path / "m.git", ["--upload-pack=touch x"])


def test_push_is_refused_and_the_hub_is_unchanged(served, tmp_path):
    url, hub, main, _ = served
    before = _state(hub)
    work = tmp_path / "work"
    auth = ["-c", f"http.extraHeader=Authorization: Bearer {TOKEN}"]
    subprocess.run(["git", *auth, "clone", "-q", url, str(work)], check=True, capture_output=True)
    (work / "evil.txt").write_text("evil\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x", "GIT_COMMITTER_NAME": "x",
           "GIT_COMMITTER_EMAIL": "x@x", "GIT_TERMINAL_PROMPT": "0"}
    subprocess.run(["git", "-C", str(work), "add", "."], check=True)
    subprocess.run(["git", "-C", str(work), "commit", "-qm", "evil"], check=True, env=env)
    for ref in ("HEAD:refs/heads/main", "HEAD:refs/heads/swarm/t1"):
        push = subprocess.run(["git", *auth, "-C", str(work), "push", url, ref], capture_output=True, text=True,
                              env=env)
        assert push.returncode != 0 and "403" in push.stderr, push.stderr
    # the receive-pack endpoint itself, with the token and a well-formed request
    status, _ = _request(url, "POST", "/hub.git/git-receive-pack", body=b"0000",
                         headers={"Content-Type": "application/x-git-receive-pack-request"})
    assert status == 403
    assert _state(hub) == before and git(hub, "rev-parse", "main") == main


def test_other_paths_are_refused(served):
    url, _hub, _main, _ = served
    for method, path in (("GET", "/hub.git/HEAD"), ("GET", "/hub.git/objects/info/packs"),
                         ("GET", "/hub.git/info/refs"), ("GET", "/hub.git/config"),
                         ("GET", "/other.git/info/refs?service=git-upload-pack"),
                         ("GET", "/hub.git/../../etc/passwd"), ("GET", "/etc/passwd"),
                         ("POST", "/hub.git/info/refs?service=git-upload-pack"), ("PUT", "/hub.git/HEAD"),
                         ("DELETE", "/hub.git/info/refs"), ("GET", "/hub.git/git-upload-pack")):
        status, body = _request(url, method, path, body=b"" if method in ("POST", "PUT") else None)
        assert status in (403, 404), (method, path, status)
        assert b"ref: refs/heads" not in body and b"root:" not in body
    status, _ = _request(url, "GET", "/hub.git/info/refs?service=git-receive-pack")
    assert status == 403
    status, body = _request(url, "GET", "/info/refs?service=git-upload-pack")  # the hub at the root too
    assert status == 200 and body.startswith(pkt_line("# service=git-upload-pack\n") + b"0000")


@pytest.mark.parametrize("version", ["0", "2"])
def test_plain_git_fetches_by_sha_in_either_protocol(served, tmp_path, version):
    url, _hub, _main, (_first, second) = served
    mirror = tmp_path / "plain.git"
    subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True)
    fetch = subprocess.run(["git", "-c", f"protocol.version={version}", "-c",
                            f"http.extraHeader=Authorization: Bearer {TOKEN}", f"--git-dir={mirror}", "fetch",
                            "-q", url, second], capture_output=True, text=True)
    assert fetch.returncode == 0, fetch.stderr
    assert read(mirror, second, "b.txt") == "two\n"


def test_gzip_and_chunked_request_bodies(served):
    url, _hub, _main, (first, _second) = served
    request = pkt_line(f"want {first} ofs-delta\n") + b"0000" + pkt_line("done\n")
    headers = {"Content-Type": "application/x-git-upload-pack-request"}
    for body, extra in ((request, {}), (gzip.compress(request), {"Content-Encoding": "gzip"}),
                        (iter([request[:7], request[7:]]), {"Transfer-Encoding": "chunked"})):
        status, reply = _request(url, "POST", "/hub.git/git-upload-pack", body=body, headers={**headers, **extra})
        assert status == 200 and b"PACK" in reply, (extra, reply[:200])
    status, _ = _request(url, "POST", "/hub.git/git-upload-pack", body=b"\x1f\x8bnot gzip",
                         headers={**headers, "Content-Encoding": "gzip"})
    assert status == 400
    status, _ = _request(url, "POST", "/hub.git/git-upload-pack", body=request, headers={"Content-Type": "text/plain"})
    assert status == 415


def test_concurrent_fetches_into_one_mirror(served, tmp_path):
    url, hub, main, (first, second) = served
    others = [commit(hub, main, {f"f{i}.txt": f"{i}\n"}, message=f"other {i}") for i in range(4)]
    mirror = tmp_path / "shared.git"
    errors: list[BaseException] = []

    def fetch(shas: list[str]) -> None:
        try:
            fetch_shas(url, TOKEN, mirror, shas)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(shas,))
               for shas in ([first], [second], others[:2], others[2:], [first, *others])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    for sha in (first, second, *others):
        assert git(mirror, "cat-file", "-t", sha) == "commit"
    assert git(mirror, "fsck", "--no-dangling") == ""


def test_serve_hub_refuses_without_a_token_or_a_hub(tmp_path):
    hub, _ = new_hub(tmp_path / "hub.git", {"a": "1\n"})
    for token in ("", "   ", "short"):
        with pytest.raises(ConfigError, match="HUB_SERVE_TOKEN"):
            serve_hub(hub, "127.0.0.1:0", token)
    with pytest.raises(ConfigError, match="HUB_PATH"):
        serve_hub(tmp_path / "nowhere", "127.0.0.1:0", TOKEN)
    with pytest.raises(ConfigError, match="HUB_SERVE_ADDR"):
        serve_hub(hub, "8471", TOKEN)


def _cli(tmp_path: Path, hub: Path, *args: str, token: str = "") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "GATE_"))}
    env.update(HUB_PATH=str(hub), HUB_SERVE_TOKEN=token, PYTHONUNBUFFERED="1", LOG_FORMAT="text")
    return subprocess.Popen([sys.executable, "-m", "agentswarm.ops.cli", "hub-serve", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_hub_serve_command(tmp_path):
    hub, main = new_hub(tmp_path / "hub.git", {"a": "1\n"})
    refused = _cli(tmp_path, hub, "--addr", "127.0.0.1:0")
    out, err = refused.communicate(timeout=60)
    assert refused.returncode == 2 and "HUB_SERVE_TOKEN" in err and "Traceback" not in err, err
    proc = _cli(tmp_path, hub, "--addr", "127.0.0.1:0", token=TOKEN)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "served read-only at http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.stderr else "")
        url = line.split(" at ", 1)[1].split()[0]
        fetch_shas(url, TOKEN, tmp_path / "mirror.git", [main])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert TOKEN not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
