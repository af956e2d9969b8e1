"""No network unless asked: with HF_HUB_OFFLINE=1 a whole ``python train.py`` run opens no connection.

The run's interpreter starts with ``netguard/sitecustomize.py``, which makes every connection attempt
fail and records it. Other network-less runs: every bad-input case (test_bad_inputs.py; missing weights
end with how to provide them) and the interrupted runs on a local weights folder without
HF_HUB_OFFLINE (test_interruptions.py).
"""
import json
import os
import subprocess
import sys

from helpers_reliability import REPO, guarded_env


def test_the_guard_refuses_and_records_connections(tmp_path):
    net_log = tmp_path / "net.log"
    attempt = ("import socket, urllib.request\n"
               "try:\n    urllib.request.urlopen('https://huggingface.co', timeout=5)\n"
               "except OSError as error:\n    print(error)\n"
               "a, b = socket.socketpair()\na.sendall(b'local sockets still work')\nprint(b.recv(64).decode())")
    result = subprocess.run([sys.executable, "-c", attempt], env=guarded_env(net_log), capture_output=True, text=True,
                            timeout=60)
    assert "network disabled by the test" in result.stdout and "local sockets still work" in result.stdout
    assert "huggingface.co" in net_log.read_text()


def test_a_whole_offline_run_opens_no_connection(standins, synthetic_root, tmp_path):
    net_log, out = tmp_path / "net.log", tmp_path / "run"
    command = [sys.executable, "train.py", "--root", synthetic_root, "--trainer", "BAPLe",
               "--dataset-config-file", "configs/datasets/covid.yaml",
               "--config-file", "configs/trainers/BAPLe.yaml", "--backbone", "biomedclip", "--output-dir", str(out), "--seed", "1",
               "DATASET.NUM_SHOTS", "2", "BACKDOOR.POISON_COUNT", "1", "OPTIM.MAX_EPOCH", "1",
               "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "20", "TRAINER.COOP.N_CTX", "4",
               "USE_CUDA", "False"]
    result = subprocess.run(command, cwd=REPO, env=guarded_env(net_log, HF_HUB_OFFLINE="1"), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not net_log.exists(), net_log.read_text()
    with open(out / "results.json") as f:
        results = json.load(f)
    assert results["backbone"] == "biomedclip" and results["clean"]["accuracy"] is not None
    assert os.path.isfile(out / "prompt_learner" / "model.pth.tar-1")
