"""Multi-node DDP as docs/cli.md shows it: ``torchrun --nnodes 2`` started once per "node" (here two local
processes that meet at a rendezvous on localhost, gloo on CPU) trains one run: both nodes' masks and events
identical, the run directory written once, by the node with rank 0."""

import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_one_run(tmp_path):
    port = _free_port()
    run = ["-m", "prunekit", "run", "--strategy", "chex", "--dataset", "digits", "--model", "small_cnn",
           "--epochs", "2", "--sparsity", "0.5", "--progress", "plain", "--set", "prune.params.delta_T=1",
           "--set", "prune.params.T_max=2", "--set", "data.limit_train=512", "--set", "run.latency_runs=2",
           "--out", str(tmp_path), "--name", "two-nodes"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    nodes = []
    for node_rank in (0, 1):  # what each machine would run, with its own --node_rank
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
        where = ["--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", str(port)]
        cmd = [*torchrun, *where, *run]
        nodes.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))  # fmt: skip
    outs = []
    for p in nodes:
        try:
            out, err = p.communicate(timeout=600)
        finally:
            if p.poll() is None:
                p.kill()
        outs.append((p.returncode, out, err))
    for rc, _, err in outs:
        assert rc == 0, err[-4000:]
    assert sorted(os.listdir(tmp_path)) == ["two-nodes"]
    res = json.loads((tmp_path / "two-nodes" / "result.json").read_text())
    assert res["world_size"] == 2 and res["status"] == "ok"
    assert res["ddp"]["masks_identical"] and res["ddp"]["events_identical"], res["ddp"]
    assert len(json.loads((tmp_path / "two-nodes" / "events.json").read_text())) >= 2
    # the table once, by the node with rank 0
    assert [out.count("top-1 %") for _, out, _ in outs] == [1, 0]
