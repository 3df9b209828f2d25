"ScratchSGD under PyTorch's DistributedDataParallel: 2 CPU processes, gloo on loopback."
import os, socket, subprocess, sys
from pathlib import Path
import torch
from fastai.basics import Learner
import fastai.callback.schedule
from sgd_callbacks.all import *

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_two_ranks_agree_with_each_other_and_with_one_process(tmp_path):
    env = {**os.environ, 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(free_port()), 'WORLD_SIZE': '2'}
    worker = Path(__file__).with_name('ddp_train.py')
    procs = [subprocess.Popen([sys.executable, str(worker), str(tmp_path)], env={**env, 'RANK': str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    for p in procs:
        out,_ = p.communicate(timeout=240)
        assert p.returncode == 0, out
    r0,r1 = (torch.load(tmp_path/f'rank{r}.pt') for r in range(2))
    assert r0['rows'] == r1['rows'] == 80*4//2  # each rank saw half of every global batch
    a0,a1 = r0['a'],r1['a']
    assert torch.equal(a0, a1)  # DDP averaged the gradients, so both ranks took exactly the same steps
    single = scratch_learner(linear_dls(bs=16, seed=42), LinearModel(), lr=0.1, mom=0.9, wd=0.1)
    with single.no_bar(), single.no_logging(): single.fit_one_cycle(4)
    # The mean of two half-batch gradient means rounds differently from one full-batch mean: float32
    # rounding only, so a tight tolerance; a wrong shard or a missed all-reduce is off by far more.
    assert torch.allclose(a0, single.model.a.data, rtol=0, atol=1e-5), (a0, single.model.a.data)
    assert not torch.allclose(a0, LinearModel().a.data, atol=0.1)
