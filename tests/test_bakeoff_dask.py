"""The bake-off on Dask, end to end: 2 local workers give the serial run's CSVs; a worker killed mid-run changes nothing;
a run killed with SIGKILL and resumed gives the same CSVs without rerunning a finished trial; a raising rule is recorded;
no worker process outlives the run; bad --workers, --scheduler and --resume fail before any trial."""
import io, json, os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd, pytest, torch
from sgd_callbacks.all import *
from sgd_callbacks.cli import run_bakeoff

distributed = pytest.importorskip('distributed')
psutil = pytest.importorskip('psutil')
pytestmark = pytest.mark.xdist_group('bakeoff_dask') # one cluster at a time on a 2-core machine

def small(name, steps):
    pb = BAKEOFF_PROBLEMS[name]
    return Problem(name, pb.dls_fn, pb.model_fn, pb.loss_func, pb.target, pb.metric, pb.metric_name, pb.higher, steps=steps, lrs=pb.lrs)

PBS = lambda: [small('line', 60), small('quadratic', 80), small('rosenbrock', 100)]
KW = dict(opts=['sgd', 'adam', 'lion'], trials=3, seeds=2, progress=False)

def csvs(res, d):
    "The run's CSVs, timing columns aside"
    res.save(d)
    out = {}
    for k in ('results', 'trials', 'profile', 'scores'):
        df = pd.read_csv(d/f'{k}.csv')
        out[k] = df.drop(columns=[c for c in df if 'seconds' in c]).to_csv(index=False)
    return out

def children():
    "This process's live children, but multiprocessing's resource tracker (it lives as long as this process)"
    return {p.pid for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and 'resource_tracker' not in ' '.join(p.cmdline())}

@pytest.fixture(scope='module')
def serial(tmp_path_factory):
    with_io = io.StringIO()
    return csvs(bakeoff(PBS(), file=with_io, **KW), tmp_path_factory.mktemp('serial'))

def test_two_workers_give_the_serial_csvs_and_leave_no_process(serial, tmp_path):
    before = children()
    res = bakeoff(PBS(), workers=2, file=io.StringIO(), **KW)
    assert res.meta['workers'] == 2 and 'local workers' in res.meta['where']
    assert csvs(res, tmp_path) == serial
    time.sleep(0.5); assert children() <= before # the cluster's processes are gone

def in_worker():
    try: distributed.get_worker(); return True
    except ValueError: return False

def killer(p, g, state, lr, marker='', **_):
    "Plain SGD that SIGKILLs the Dask worker running it, once (the marker file says it did)"
    if marker and not os.path.exists(marker) and in_worker():
        open(marker, 'w').close(); os.kill(os.getpid(), signal.SIGKILL)
    p.add_(g, alpha=-lr)

@pytest.mark.parametrize('workers', [2, 1]) # 1: the problem shared with the one worker dies with it, and is shared again
def test_a_worker_killed_mid_run_changes_nothing(tmp_path, workers):
    marker = tmp_path/'killed'
    opts = {'mine': OptEntry(rule_opt(killer, marker=str(marker), guard=False))}
    kw = dict(opts=opts, trials=3, seeds=2, progress=False, file=io.StringIO())
    a = bakeoff([small('line', 60)], **kw)              # in process: the rule never kills
    b = bakeoff([small('line', 60)], workers=workers, **kw)
    assert marker.exists(), "no worker was killed: the test proves nothing"
    assert csvs(a, tmp_path/'a') == csvs(b, tmp_path/'b') and b.failures() == []

# a Dask worker preload: the first worker process to start SIGKILLs itself before it joins the cluster
DIE_ONCE = """import os, signal
def dask_setup(worker):
    try: fd = os.open({marker!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError: return
    os.close(fd); os.kill(os.getpid(), signal.SIGKILL)
"""

def test_a_worker_killed_while_the_cluster_starts_changes_nothing(serial, tmp_path):
    "Dask's LocalCluster fails ('Nanny failed to start'); the pool starts it again, the run goes on to the serial CSVs"
    import dask
    marker,pre = tmp_path/'killed',tmp_path/'die_once.py'
    pre.write_text(DIE_ONCE.format(marker=str(marker)))
    before,out = children(),io.StringIO()
    with dask.config.set({'distributed.worker.preload': [str(pre)]}): res = bakeoff(PBS(), workers=2, file=out, **KW)
    assert marker.exists(), "no worker was killed: the test proves nothing"
    assert 'worker died while the cluster started; started again (RuntimeError: Nanny failed to start' in out.getvalue()
    assert csvs(res, tmp_path) == serial and res.failures() == []
    time.sleep(0.5); assert children() <= before      # the failed start left no process either

def boom(p, g, state, lr, **_): raise RuntimeError('my rule is broken')

def test_a_raising_rule_is_recorded_and_the_bakeoff_goes_on(tmp_path):
    for workers in (None, 2):
        res = bakeoff([small('line', 30)], opts={'boom': own_rule(boom), 'sgd': 'sgd'}, trials=2, seeds=1, progress=False,
                      workers=workers, file=io.StringIO())
        t = res.trials
        assert (t[t.optimizer == 'boom'].error.str.contains('RuntimeError: my rule is broken')).all()
        assert not t[t.optimizer == 'boom'].reached.any() and (t[t.optimizer == 'sgd'].error == '').all()
        assert len(res.failures()) == 3 and res.scores.set_index('optimizer').solved['boom'] == 0

def test_a_run_killed_and_resumed_gives_the_same_csvs(tmp_path):
    "SIGKILL mid-run: the store keeps the finished trials; --resume reads them, runs the rest and ends with the same CSVs"
    args = ['--problems', 'line,quadratic', '--opts', 'sgd,adam', '--trials', '4', '--seeds', '2']
    cmd = [str(Path(sys.executable).parent/'sgd_bakeoff')]             # the console script, as a user runs it
    full = subprocess.run([*cmd, *args, '--out', str(tmp_path/'full')], capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-2000:]
    p = subprocess.Popen([*cmd, *args, '--out', str(tmp_path/'cut')], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = tmp_path/'cut'/'trials.jsonl'
    for _ in range(600):
        if store.exists() and len(store.read_text().splitlines()) >= 6: break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    done = len(store.read_text().splitlines()) - 1                   # the first line is the run's configuration
    assert 5 <= done < 24, f"killed after {done} of 24 trials: not mid-run"
    again = subprocess.run([*cmd, *args, '--out', str(tmp_path/'cut'), '--resume'], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"trials: {done} read from" in again.stdout and f"{24-done} run and written" in again.stdout
    for k in ('results', 'trials', 'profile', 'scores'):
        a,b = (pd.read_csv(tmp_path/d/f'{k}.csv') for d in ('full', 'cut'))
        a,b = (x.drop(columns=[c for c in x if 'seconds' in c]) for x in (a, b))
        assert a.to_csv() == b.to_csv(), k
    # another configuration on that folder: refused, nothing touched
    before = store.read_bytes()
    other = subprocess.run([*cmd, '--problems', 'line', '--opts', 'sgd', '--out', str(tmp_path/'cut'), '--resume'], capture_output=True, text=True)
    assert other.returncode == 2 and '--resume' in other.stderr and 'another configuration' in other.stderr
    assert store.read_bytes() == before

class Interrupt(io.StringIO):
    "A progress file that raises KeyboardInterrupt (Ctrl-C) at the first (problem, optimizer) line"
    def write(self, s):
        if s.startswith('['): raise KeyboardInterrupt
        return super().write(s)

def test_an_interrupt_leaves_no_worker_process():
    before = children()
    with pytest.raises(KeyboardInterrupt): bakeoff(PBS(), workers=2, file=Interrupt(), **KW)
    time.sleep(0.5); assert children() <= before

@pytest.mark.parametrize('kw,msg', [(dict(workers=0), '--workers'), (dict(scheduler='tcp://127.0.0.1:9'), '--scheduler'),
                                    (dict(resume=True), '--resume')])
def test_bad_distributed_arguments_before_any_trial(kw, msg, tmp_path):
    err,out = io.StringIO(),io.StringIO()
    assert run_bakeoff(problems='line', opts='sgd', err=err, file=out, **kw) == 2
    assert msg in err.getvalue() and '[1/' not in out.getvalue(), err.getvalue()
