"`learn.ddp_ctx()` on 2 CPU processes (gloo on loopback): exact sharing, whole-set validation, and failures that stop every rank."
import os, socket, subprocess, sys, time
from pathlib import Path
import pytest, torch
from torch import nn
from fastai.basics import Learner
import fastai.callback.schedule
from sgd_callbacks.all import *

worker = Path(__file__).with_name('ddp_train.py')

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def launch(mode, tmp, timeout=240):
    "Run the two ranks of `mode`; their `(returncode, output)` and the seconds the slower took"
    env = {**os.environ, 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(free_port()), 'WORLD_SIZE': '2'}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(worker), mode, str(tmp)], env={**env, 'RANK': str(r), 'LOCAL_RANK': str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    res = []
    for p in procs:
        try: res.append((p.wait(timeout=timeout), p.stdout.read()))
        except subprocess.TimeoutExpired:
            for q in procs: q.kill()
            pytest.fail(f"rank {len(res)} of {mode} still running after {timeout} s: a hang")
    return res, time.perf_counter()-t0

def test_lesson_ranks_agree_with_each_other_and_with_one_process(tmp_path):
    res,_ = launch('lesson', tmp_path)
    for rc,out in res: assert rc == 0, out
    r0,r1 = (torch.load(tmp_path/f'rank{r}.pt') for r in range(2))
    assert r0['rows'] == r1['rows'] == 80*4//2        # each rank trained on half of every global batch
    assert torch.equal(r0['sd']['a'], r1['sd']['a'])  # DDP averaged the gradients: the same steps on both
    one = scratch_learner(linear_dls(bs=16, seed=42), LinearModel(), lr=0.1, mom=0.9, wd=0.1)
    with one.no_bar(), one.no_logging(): one.fit_one_cycle(4)
    # The mean of two half-batch gradient means rounds differently from one whole-batch mean: float32
    # rounding only, so a tight tolerance; a wrong share or a missed all-reduce is off by far more.
    assert torch.allclose(r0['sd']['a'], one.model.a.data, rtol=0, atol=1e-5), (r0['sd']['a'], one.model.a.data)
    assert not torch.allclose(r0['sd']['a'], LinearModel().a.data, atol=0.1)
    # every rank validates on the whole validation set, so the metrics are the one-process ones
    assert r0['valid'] == r1['valid']
    assert abs(r0['valid'][0] - one.validate()[0]) < 1e-5

def test_digits_shares_are_normalised_as_in_one_process(tmp_path):
    res,_ = launch('digits', tmp_path)
    for rc,out in res: assert rc == 0, out
    r = [torch.load(tmp_path/f'rank{i}.pt') for i in range(2)]
    dls = digits_dls(size=8, bs=32, seed=42)
    learn = Learner(dls, nn.Linear(1,1), cbs=EpochShuffle())
    dls.train.set_epoch(0)
    full = [b[0].as_subclass(torch.Tensor) for _,b in zip(range(2), dls.train)]  # the one-process batches, after Normalize
    assert abs(full[0].mean().item()) < 0.5            # normalised, not raw pixels in [0, 1]
    for i in range(2):
        for rank in range(2): assert torch.equal(r[rank]['xs'][i], full[i][rank::2]), (i, rank)
    for k,v in r[0]['sd'].items():
        if v.is_floating_point() and 'running' not in k: assert torch.equal(v, r[1]['sd'][k]), k
    assert r[0]['rows'] + r[1]['rows'] == len(dls.train.dataset)

def test_diverging_run_stops_both_ranks_with_the_message(tmp_path):
    res,secs = launch('diverge', tmp_path, timeout=180)
    for rank,(rc,out) in enumerate(res):
        assert rc != 0, out
        err = (tmp_path/f'rank{rank}.err').read_text()
        assert err.startswith('DivergedError') and 'Training diverged' in err, err
    assert secs < 120

def test_a_rank_that_fails_alone_stops_the_other(tmp_path):
    res,secs = launch('fail1', tmp_path, timeout=180)
    assert all(rc != 0 for rc,_ in res), res
    assert 'boom on rank 1' in (tmp_path/'rank1.err').read_text()
    for _,out in res: assert 'Exception ignored' not in out, out  # the failing rank's group is closed once, not again at exit
    err0 = (tmp_path/'rank0.err').read_text()
    assert err0.startswith('RankFailed') and 'another process of the run failed' in err0, err0
    assert secs < 50  # far below the 60 s process-group timeout: rank 1 closing its connections stopped rank 0

def test_comparison_entry_point_under_torchrun():
    # `--standalone`: torchrun binds its store to a port the system gives it, so no port is chosen (and raced for) here; the
    # timeout is generous (a run takes about 40 s on two loaded cores); the ranks leave by `os._exit` once their group is
    # closed (51_distributed, "Leaving the process"), so the interpreter's teardown cannot abort one with SIGABRT
    out = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                          '-m', 'sgd_callbacks.distributed', '--epochs', '2'], capture_output=True, text=True, timeout=900,
                         stdin=subprocess.DEVNULL) # not the stdin of a pytest-xdist worker, which is its channel
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'terminate called' not in out.stderr, out.stderr[-3000:]
    lines = [l for l in out.stdout.splitlines() if l.startswith(('fastai SGD', 'ScratchSGD'))]
    assert len(lines) == 2, out.stdout      # one table, from rank 0
    ref,scr = lines
    assert ref.split()[-2:] == ['True', 'reference'], ref  # the ranks agree; fastai's own run is no parity check
    assert scr.split()[-2:] == ['True', 'True'], scr       # the ranks agree, and ScratchSGD is bit-identical to fastai's
