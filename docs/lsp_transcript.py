"""Drive yaml-language-server over stdio on a rule file, and print what an editor would show.

    npm install yaml-language-server   # once, anywhere
    python docs/lsp_transcript.py path/to/node_modules/.bin/yaml-language-server

It opens a rule file that points at the shipped JSON Schema with the modeline
``# yaml-language-server: $schema=...``, prints the diagnostics (inline errors) and the
completions offered where an action name goes. docs/editors.md holds one such transcript.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "rules_engine" / "schema" / "rules.schema.json"
RULE_FILE = f"""# yaml-language-server: $schema={SCHEMA.as_uri()}
rules:
  - id: close-on-thanks
    trigger: {{event: message.recieved}}
    actions:
      - assing: {{user: susan}}
      -{' '}
"""


class Client:
    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)
        self.next_id = 0

    def send(self, method: str, params: Any, *, request: bool = True) -> int | None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            message["id"] = self.next_id
        body = json.dumps(message).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()
        return message.get("id")

    def receive(self) -> dict[str, Any]:
        length = 0
        while (line := self.process.stdout.readline().strip()):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return json.loads(self.process.stdout.read(length))

    def wait_for(self, predicate) -> dict[str, Any]:
        while True:
            message = self.receive()
            if message.get("method") == "workspace/configuration":
                self.reply(message["id"], [{"validate": True, "completion": True}] * len(message["params"]["items"]))
            elif message.get("method") in ("client/registerCapability", "window/workDoneProgress/create"):
                self.reply(message["id"], None)
            elif predicate(message):
                return message

    def reply(self, message_id: int, result: Any) -> None:
        body = json.dumps({"jsonrpc": "2.0", "id": message_id, "result": result}).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()


def main() -> None:
    server = sys.argv[1] if len(sys.argv) > 1 else "yaml-language-server"
    client = Client([server, "--stdio"])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rules.yaml"
        path.write_text(RULE_FILE)
        uri = path.as_uri()
        init = client.send("initialize", {"processId": None, "rootUri": Path(folder).as_uri(),
                                          "capabilities": {"textDocument": {"completion": {}}}})
        client.wait_for(lambda m: m.get("id") == init)
        client.send("initialized", {}, request=False)
        client.send("workspace/didChangeConfiguration",
                    {"settings": {"yaml": {"validate": True, "completion": True}}}, request=False)
        client.send("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "yaml", "version": 1, "text": RULE_FILE}}, request=False)
        diagnostics = client.wait_for(
            lambda m: m.get("method") == "textDocument/publishDiagnostics" and m["params"]["diagnostics"])
        print(f"$ cat rules.yaml\n{RULE_FILE}")
        print("diagnostics (what the editor underlines):")
        for item in diagnostics["params"]["diagnostics"]:
            start = item["range"]["start"]
            print(f"  line {start['line'] + 1}, column {start['character'] + 1}: {item['message']}")
        asked = client.send("textDocument/completion", {"textDocument": {"uri": uri},
                                                        "position": {"line": 6, "character": 8}})
        completion = client.wait_for(lambda m: m.get("id") == asked)["result"]
        items = completion["items"] if isinstance(completion, dict) else completion
        print("\ncompletion offered after `- ` under actions (line 7):")
        for item in sorted(items, key=lambda i: i["label"]):
            print(f"  {item['label']}")
    client.process.terminate()
    time.sleep(0.1)


if __name__ == "__main__":
    main()
