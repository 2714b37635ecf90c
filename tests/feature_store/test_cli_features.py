"""`finml features …` as a user runs it: bad input is one line and exit 2; a real training set; `local up` serves
HTTPS and stops everything it started on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_finml

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("args, needle", [
    (["features", "training-set", "--out", "x", "--rows", "0"], "--rows: must be at least 1"),
    (["features", "training-set", "--out", "x", "--site", "gcp:europe"], "use aws:<region> or onprem:<site-id>"),
    (["features", "local", "up", "--rows", "many"], "'many' is not a whole number"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    proc = run_finml(*args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_training_set_command_writes_the_contract_files(tmp_path):
    proc = run_finml("features", "training-set", "--dir", str(tmp_path / "work"), "--rows", "800",
                     "--site", "onprem:fra-dc1", "--allowed", "confidential", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["rows"] == 800 and summary["classification"] == "confidential"
    lineage = json.loads((tmp_path / "out" / "training_set.lineage.json").read_text())
    assert lineage["site"] == "onprem:fra-dc1"
    assert "customer_profile" not in {v["name"] for v in lineage["feature_views"]}


def test_local_up_serves_https_and_stops_cleanly_on_sigterm(tmp_path):
    work = tmp_path / "local"
    proc = subprocess.Popen([sys.executable, "-m", "finml.cli", "features", "local", "up", "--dir", str(work),
                             "--rows", "500"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 420
        while not (work / "local.json").exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "local up did not come up"
            time.sleep(1)
        info = json.loads((work / "local.json").read_text())
        ctx = ssl.create_default_context(cafile=info["ca_bundle"])
        with urllib.request.urlopen(f"{info['feature_server']}/health", context=ctx, timeout=10) as resp:
            assert resp.status == 200
        # authentication is on: the written token reads features, no token is refused
        token_file = Path(info["tokens"]["finml-serving"])
        assert token_file.stat().st_mode & 0o077 == 0, "tokens are private to the user"
        body = json.dumps({"features": ["merchant_risk:merchant_fraud_rate_28d"],
                           "entities": {"merchant_id": ["me000000"]}}).encode()
        url = f"{info['feature_server']}/get-online-features"
        auth = {"Authorization": f"Bearer {token_file.read_text().strip()}", "Content-Type": "application/json"}
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=auth), context=ctx,
                                    timeout=30) as resp:
            answer = json.loads(resp.read())
        assert answer["metadata"]["feature_names"] == ["merchant_id", "merchant_fraud_rate_28d"], answer
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}),
                                   context=ctx, timeout=30)
        assert refused.value.code == 401
        running = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout.split()
        assert len(running) >= 3, "postgres, redis-server and feast serve run with their files under the work dir"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
        assert "Authorization: Bearer" in proc.stderr.read(), "local up says how to authenticate"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # nothing it started is left: postgres, redis and feast serve all ran in their own process groups
    leftover = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", f"processes left running: {leftover.stdout}"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{info['feature_server']}/health", context=ctx, timeout=5)
