"""The app starts without the heavy google libraries; they load on the first Dialogflow call."""
from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys, tempfile
from connectors import create_app
folder = tempfile.mkdtemp()
app = create_app({"dev": True, "database_url": f"sqlite:///{folder}/x.db", "rules_dir": sys.argv[1]})
client = app.test_client()
client.get("/healthz")
print("before", any(name.startswith("google.cloud.dialogflow") for name in sys.modules))
client.post("/webhooks/dialogflow", json={"responseId": "r", "session": "projects/p/agent/sessions/s",
                                          "queryResult": {"parameters": {"RB_MARKDONE": False}}})
print("after", any(name.startswith("google.cloud.dialogflow") for name in sys.modules))
"""


def test_google_libraries_load_only_for_dialogflow(tmp_path):
    from .test_validation import REPO

    finished = subprocess.run([sys.executable, "-c", CHECK, str(REPO / "rules")],
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["before", "False", "after", "True"]
