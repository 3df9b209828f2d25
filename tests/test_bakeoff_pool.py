"The trial pool (in process, local Dask workers, a running scheduler) and the trial store (append-only, resumable)."
import json, math, os, signal, subprocess, sys, time
from types import SimpleNamespace
import pytest, torch
from sgd_callbacks.bakeoff.pool import TrialPool, TrialStore, TrialLost, SharedLost, SerialFuture

# the Dask tests share one cluster, built once on one pytest-xdist worker
pytestmark = pytest.mark.xdist_group('bakeoff_pool')

def trial(seed, lr=0.1):
    "A deterministic torch trial: a few SGD steps on least squares drawn from `seed`"
    g = torch.Generator().manual_seed(seed)
    x,y = torch.randn(64, 3, generator=g),torch.randn(64, generator=g)
    a = torch.zeros(3, requires_grad=True)
    for _ in range(20):
        ((x@a - y)**2).mean().backward()
        with torch.no_grad(): a.sub_(lr * a.grad); a.grad.zero_()
    return a.detach()

def raises(msg): raise ValueError(msg)
def pid_threads(): return os.getpid(),torch.get_num_threads()

def die_once(marker):
    "SIGKILL this worker the first time (marker missing), succeed the second"
    if not os.path.exists(marker): open(marker, 'w').close(); os.kill(os.getpid(), signal.SIGKILL)
    return 42

def die(): os.kill(os.getpid(), signal.SIGKILL)

@pytest.fixture(scope='module')
def pool():
    pytest.importorskip('distributed')
    # two torch threads, unlike Dask's default of one (OMP_NUM_THREADS=1 in its workers): the test sees the setting act
    with TrialPool(workers=2, threads=2, retries=1) as p: yield p

def run(pool, seeds):
    futs = [pool.submit(trial, s, key=f'seed-{s}') for s in seeds]
    return {f.key: f.result() for f in pool.as_completed(futs)}

# ---- in process

def test_serial_runs_when_asked_in_order():
    calls = []
    def f(i): calls.append(i); return i*i
    with TrialPool() as p:
        futs = [p.submit(f, i, key=str(i)) for i in range(4)]
        assert calls == [] and not futs[0].done()
        assert futs[2].result() == 4 and calls == [2]
        assert [f.key for f in p.as_completed(futs)] == ['0', '1', '2', '3']
        assert calls == [2, 0, 1, 3] and all(f.done() for f in futs)
        with pytest.raises(ValueError, match='a user rule'): p.submit(raises, 'a user rule').result()
    assert p.dashboard_link is None and p.nworkers == 1

def test_importing_and_the_serial_pool_need_no_dask():
    code = ("import sys, sgd_callbacks.all, sgd_callbacks.bakeoff.pool as bp\n"
            "with bp.TrialPool() as p: assert p.submit(abs, -2).result() == 2\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == '[]', out.stdout

@pytest.mark.parametrize('kw,msg', [
    (dict(workers=0), '`workers` must be >= 1'), (dict(workers=-2), '`workers` must be >= 1'),
    (dict(workers=1.5), '`workers` must be an int'), (dict(workers='2'), '`workers` must be an int'),
    (dict(workers=True), '`workers` must be an int'), (dict(workers=2, scheduler='tcp://h:8786'), 'not both'),
    (dict(scheduler=8786), '`scheduler` must be'), (dict(scheduler=' '), '`scheduler` must be'),
    (dict(workers=1, threads=0), '`threads` must be >= 1'), (dict(retries=-1), '`retries` must be >= 0'),
    (dict(scheduler='tcp://h:1', timeout=0), '`timeout` must be > 0')])
def test_bad_input_names_the_argument(kw, msg):
    with pytest.raises((TypeError, ValueError), match=msg): TrialPool(**kw)

def test_submit_checks_fn_and_an_open_pool():
    with pytest.raises(TypeError, match='`fn` must be a function'): TrialPool().submit(3)
    with pytest.raises(RuntimeError, match='not open'): TrialPool(workers=1).submit(abs, 1)

# ---- on Dask

def test_workers_give_the_serial_results_bit_for_bit(pool):
    with TrialPool() as p: serial = run(p, range(8))
    par = run(pool, range(8))
    assert sorted(par) == sorted(serial) == sorted(f'seed-{s}' for s in range(8))
    assert all(torch.equal(par[k], serial[k]) for k in serial)

def test_trials_run_in_worker_processes_with_their_threads(pool):
    assert pool.nworkers == 2 and pool.dashboard_link.startswith('http')
    pids = {pool.submit(pid_threads, key='w').result() for _ in range(4)}
    assert all(pid != os.getpid() and nt == 2 for pid,nt in pids), pids

def test_the_same_key_twice_is_two_trials(pool):
    futs = [pool.submit(trial, s, key='same') for s in (0, 1)]
    assert not torch.equal(futs[0].result(), futs[1].result())

def test_an_exception_in_the_trial_is_raised_by_result(pool):
    f = pool.submit(raises, 'a user rule', key='bad')
    assert [g.key for g in pool.as_completed([f])] == ['bad']
    with pytest.raises(ValueError, match='a user rule'): f.result()

def test_a_killed_worker_has_its_trial_rerun(pool, tmp_path):
    f = pool.submit(die_once, str(tmp_path/'marker'), key='dies-once')
    assert f.result(timeout=60) == 42 and (tmp_path/'marker').exists()

def test_a_trial_that_kills_every_worker_is_lost(pool):
    f = pool.submit(die, key='dies-always')
    with pytest.raises(TrialLost, match='dies-always'): f.result(timeout=60)
    assert run(pool, [3])['seed-3'].shape == (3,) # the cluster goes on

class Box:
    "An object `share` sends whole (Dask would scatter a list's items one by one)"
    def __init__(self, v): self.v = v
def unbox(b): return b.v

def test_what_is_shared_stays_on_every_worker(pool):
    "Dask's memory manager, left on, drops all copies but one within 2 s: the death of that worker would lose it"
    s = pool.share(Box(7))
    time.sleep(5)
    assert len(pool.client.who_has(s)[s.key]) == 2 and not pool.lost(s)

def test_a_trial_whose_shared_object_is_gone_raises_shared_lost(pool):
    s = pool.share(Box(8))
    assert pool.submit(unbox, s).result(timeout=60) == 8
    pool.client.cancel(s)                                # gone from every worker, as when its last holder dies
    with pytest.raises(SharedLost, match='unbox'): pool.submit(unbox, s, key='unbox').result(timeout=60)
    assert pool.lost(s)
    s = pool.share(Box(8))                               # shared again, the trial runs
    assert not pool.lost(s) and pool.submit(unbox, s).result(timeout=60) == 8

def test_connecting_to_a_running_scheduler(pool):
    with TrialPool(scheduler=pool.cluster.scheduler_address) as p:
        assert p.kind == 'cluster' and p.nworkers == 2
        assert torch.equal(p.submit(trial, 5).result(), trial(5))
    assert pool.submit(trial, 5).result().shape == (3,) # disconnecting leaves the cluster up

def test_a_scheduler_that_does_not_answer_is_an_error_naming_it():
    pytest.importorskip('distributed')
    t = time.time()
    with pytest.raises(ValueError, match=r"`scheduler`: no Dask scheduler answers at 'tcp://127.0.0.1:9'"):
        with TrialPool(scheduler='tcp://127.0.0.1:9', timeout=1): pass
    assert time.time() - t < 10

@pytest.mark.parametrize('fails,retries', [(1, 1), (2, 1)])
def test_a_local_cluster_that_fails_to_start_as_a_killed_worker_makes_it_is_started_again(monkeypatch, fails, retries):
    "LocalCluster raises as when a worker dies while it starts: started again up to `retries` times, then the error"
    distributed = pytest.importorskip('distributed')
    calls = []
    class Cluster: # no process: what the pool does with the failure is what is tested
        scheduler_address = 'inproc://none'
        def __init__(self, **kw):
            calls.append(kw)
            if len(calls) <= fails: raise RuntimeError('Nanny failed to start.')
        def close(self): calls.append('closed')
    monkeypatch.setattr(distributed, 'LocalCluster', Cluster)
    monkeypatch.setattr(distributed, 'Client', lambda cluster: SimpleNamespace(close=lambda: None))
    p = TrialPool(workers=2, retries=retries)
    if fails > retries:
        with pytest.raises(RuntimeError, match='Nanny failed to start'): p.open()
        assert len(calls) == retries + 1 and p.cluster is None
    else:
        with p: assert isinstance(p.cluster, Cluster) and p.restarts == ['RuntimeError: Nanny failed to start.']
        assert len(calls) == fails + 2 and calls[-1] == 'closed' and calls[0]['n_workers'] == 2

def workers_alive(psutil, before):
    "Processes started since `before`, but multiprocessing's resource tracker (it lives as long as this process)"
    kids = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    return [p for p in kids if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            and 'resource_tracker' not in ' '.join(p.cmdline())]

@pytest.mark.parametrize('exc', [None, RuntimeError, KeyboardInterrupt])
def test_no_worker_process_is_left(exc):
    pytest.importorskip('distributed')
    psutil = pytest.importorskip('psutil')
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    try:
        with TrialPool(workers=1) as p:
            assert p.submit(abs, -1).result() == 1
            assert len(workers_alive(psutil, before)) == 1
            if exc is not None: p.submit(time.sleep, 30); time.sleep(0.5); raise exc('stop') # a trial running
    except (RuntimeError, KeyboardInterrupt) as e: assert exc is not None and str(e) == 'stop'
    assert workers_alive(psutil, before) == []
    assert p.client is None and p.cluster is None

# ---- the store

CFG = dict(problems=['rosenbrock', 'digits'], opts=['sgd', 'adam'], seeds=[0, 1], budget=2.5)
ODD = dict(a=0.1 + 0.2, tiny=5e-324, neg0=-0.0, inf=math.inf, ninf=-math.inf, nan=math.nan, none=None, big=2**70,
           s='é∞', nested=dict(xs=[1e-310, 1/3, (1, 2)]))

def same(a, b):
    "`b` (read back) equals `a`, NaN as NaN, -0.0 told from 0.0, a tuple as a list"
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict): return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)): return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return type(a) == type(b) and a == b

def test_store_round_trips_every_number_exactly(tmp_path):
    st = TrialStore(tmp_path/'run', CFG)
    st.put('k1', ODD); st.put('k2', dict(x=float(torch.tensor(0.1))))
    assert same(ODD, st.get('k1')) and st.get('k1')['nested']['xs'][2] == [1, 2]
    back = TrialStore(tmp_path/'run', CFG, resume=True)
    assert list(back) == ['k1', 'k2'] and 'k1' in back and 'k3' not in back and back.get('k3') is None
    assert all(same(back.get(k), st.get(k)) for k in st) and same(ODD, back.get('k1'))
    assert not same(dict(x=-0.0), dict(x=0.0)) and not same(dict(x=math.nan), dict(x=0.0)) # `same` can fail
    lines = (tmp_path/'run'/'trials.jsonl').read_text().splitlines()
    assert json.loads(lines[0]) == {'config': json.loads(json.dumps(CFG))} and len(lines) == 3

def test_store_takes_numpy_numbers_at_their_exact_value(tmp_path):
    np = pytest.importorskip('numpy')
    st = TrialStore(tmp_path, {})
    st.put('a', dict(f32=np.float32(0.1), i=np.int64(3), arr=np.array([0.5, np.inf])))
    assert TrialStore(tmp_path, {}, resume=True).get('a') == dict(f32=float(np.float32(0.1)), i=3, arr=[0.5, math.inf])

def test_resume_counts_what_was_loaded_and_written(tmp_path):
    st = TrialStore(tmp_path, CFG); st.put('a', {}); st.put('b', {})
    assert st.counts == dict(loaded=0, written=2) and len(st) == 2
    st = TrialStore(tmp_path, CFG, resume=True)
    assert st.counts == dict(loaded=2, written=0)
    st.put('c', {}); assert st.counts == dict(loaded=2, written=1) and len(st) == 3
    with pytest.raises(ValueError, match="`key` 'a' is stored already"): st.put('a', {})

def test_a_torn_last_line_is_ignored_then_cut_off(tmp_path):
    st = TrialStore(tmp_path, CFG); st.put('a', dict(x=1.5))
    f = tmp_path/'trials.jsonl'
    with open(f, 'ab') as fh: fh.write(b'{"key": "b", "record": {"x": 2.')
    st = TrialStore(tmp_path, CFG, resume=True)
    assert list(st) == ['a'] and st.counts['loaded'] == 1
    st.put('b', dict(x=2.5))
    assert [json.loads(l)['key'] for l in f.read_text().splitlines()[1:]] == ['a', 'b']
    assert TrialStore(tmp_path, CFG, resume=True).get('b') == dict(x=2.5)

def test_a_store_killed_by_sigkill_keeps_every_finished_trial(tmp_path):
    code = ("import os, signal, sys; from sgd_callbacks.bakeoff.pool import TrialStore\n"
            "st = TrialStore(sys.argv[1], {'n': 3})\n"
            "for i in range(3): st.put(str(i), {'i': i})\n"
            "os.kill(os.getpid(), signal.SIGKILL)")
    out = subprocess.run([sys.executable, '-c', code, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    st = TrialStore(tmp_path, {'n': 3}, resume=True)
    assert [st.get(k) for k in st] == [{'i': 0}, {'i': 1}, {'i': 2}]

def test_an_existing_store_needs_resume_and_stays_untouched(tmp_path):
    st = TrialStore(tmp_path, CFG); st.put('a', dict(x=1.))
    f = tmp_path/'trials.jsonl'; before = f.read_bytes()
    with pytest.raises(ValueError, match=r'holds a run already: pass `resume=True` to continue it, or another folder'):
        TrialStore(tmp_path, CFG)
    other = {**CFG, 'seeds': [0, 1, 2], 'extra': 1}; del other['budget']
    with pytest.raises(ValueError, match=r'`resume`: .* another configuration \(budget: stored 2.5, now \(none\); '
                                         r'extra: stored \(none\), now 1; seeds: stored \[0, 1\], now \[0, 1, 2\]\)'):
        TrialStore(tmp_path, other, resume=True)
    assert f.read_bytes() == before
    assert TrialStore(tmp_path, {**CFG, 'seeds': (0, 1)}, resume=True).counts['loaded'] == 1 # a tuple: the list stored

def test_resume_without_a_store_starts_one(tmp_path):
    st = TrialStore(tmp_path/'new'/'run', CFG, resume=True)
    assert len(st) == 0 and st.counts == dict(loaded=0, written=0) and (tmp_path/'new'/'run'/'trials.jsonl').exists()

def test_store_bad_input(tmp_path):
    (tmp_path/'file').write_text('x')
    with pytest.raises(ValueError, match='`folder` must be a folder'): TrialStore(tmp_path/'file', {})
    with pytest.raises(TypeError, match='`config` must be a dict'): TrialStore(tmp_path, [1])
    with pytest.raises(TypeError, match='`config` must be made of JSON'): TrialStore(tmp_path, dict(f=print))
    with pytest.raises(TypeError, match='`resume` must be True or False'): TrialStore(tmp_path, {}, resume=1)
    (tmp_path/'other').mkdir(); (tmp_path/'other'/'trials.jsonl').write_text('{"a": 1}\n')
    with pytest.raises(ValueError, match='`folder`: .* is not a trial store'):
        TrialStore(tmp_path/'other', {}, resume=True)
    (tmp_path/'mid').mkdir(); (tmp_path/'mid'/'trials.jsonl').write_text('{"config": {}}\nnot json\n{"key": "a", "record": 1}\n')
    with pytest.raises(ValueError, match=r'trials.jsonl, line 2: not a trial'): TrialStore(tmp_path/'mid', {}, resume=True)
    st = TrialStore(tmp_path/'ok', {})
    with pytest.raises(TypeError, match='`key` must be a str'): st.put(('p', 1), {})
    with pytest.raises(TypeError, match='`record` must be made of JSON'): st.put('a', dict(x=object()))
    assert len(st) == 0 and len(TrialStore(tmp_path/'ok', {}, resume=True)) == 0 # a refused record writes nothing

def fails_once(marker):
    "Raise the first time (marker missing), succeed the second"
    if not os.path.exists(marker): open(marker, 'w').close(); raise RuntimeError('flaky')
    return 7

def test_a_trial_that_raises_is_rerun_retries_times(pool, tmp_path):
    "`retries` reruns a trial that raises, not only one whose worker died (the scheduler's allowed failures)"
    assert pool.submit(fails_once, str(tmp_path/'marker'), key='flaky').result(timeout=60) == 7
