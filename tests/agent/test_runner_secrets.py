"""A scripted model makes the built-in agent print the secrets in every form; result.json holds none of them."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from urllib.parse import quote

from agentswarm.demo.fake_llm import FakeLLMServer
from tests.agent.conftest import SECRET_KEY, SECRET_TOKEN, run_runner, write_task

MODAL_SECRET = "as-modal/secret+value=42!"  # characters that make the percent-encoded form differ
SECRETS = (SECRET_KEY, SECRET_TOKEN, MODAL_SECRET)


def printed_forms(secret: str) -> list[str]:
    """What the script below prints for one secret (base64 at three alignments, URL-safe, hex, percent)."""
    data = secret.encode()
    forms = [secret, data.hex(), data.hex().upper(), quote(secret, safe="")]
    for prefix in (b"", b"x", b"xy"):
        forms.append(base64.b64encode(prefix + data + b" tail").decode())
        forms.append(base64.urlsafe_b64encode(prefix + data + b" tail").decode())
    return forms


SCRIPT = f"""{sys.executable} - <<'EOF'
import base64, urllib.parse
for s in {list(SECRETS)!r}:
    d = s.encode()
    print("plain", s)
    print("hex", d.hex(), d.hex().upper())
    print("pct", urllib.parse.quote(s, safe=""))
    for p in (b"", b"x", b"xy"):
        print("b64", base64.b64encode(p + d + b" tail").decode(), base64.urlsafe_b64encode(p + d + b" tail").decode())
EOF"""


def call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


def test_secrets_printed_in_every_form_never_reach_result_json(tmp_path: Path, hub) -> None:
    every_form = [f for s in SECRETS for f in printed_forms(s)]
    summary = "I found these: " + " ".join(every_form)
    script = [
        {"content": "Let me look at the credentials. " + every_form[1], "tool_calls": [call("run", command=SCRIPT)]},
        {"content": None, "tool_calls": [call("finish", status="blocked", summary=summary)]},
    ]
    with FakeLLMServer(script) as llm:
        task = write_task(tmp_path / "sb", hub, llm.url)
        code, result, err = run_runner(task, MODAL_TOKEN_SECRET=MODAL_SECRET)
    assert code == 2 and result["status"] == "blocked", (result, err)
    on_disk = (tmp_path / "sb" / "transcript.jsonl").read_text()
    tool_output = [json.loads(line) for line in on_disk.splitlines() if json.loads(line)["kind"] == "tool"]
    assert tool_output and "b64" in json.dumps(tool_output) and "***" in json.dumps(tool_output)  # it did run
    stored = json.dumps(result)
    assert "***" in result["summary"]
    for text in (stored, result["transcript"], result["summary"], on_disk):
        for form in every_form:
            # No 12-character piece of any printed form survives (base64 keeps at most 2 edge characters a side).
            pieces = [form[i:i + 12] for i in range(len(form) - 11)]
            assert not [p for p in pieces if p in text], (form, text[:2000])
