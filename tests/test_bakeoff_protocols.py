"""The bake-off's protocols on hand-made traces (no training) and on tiny runs: DeepOBS' tuning trial never scored, AlgoPerf's
studies (best trial by earliest evaluation, median over studies, Halton draws), self-tuning's defaults and budget, the
warm-up + cosine schedule, and the warnings for a best setting at the edge of its range."""
import io, math
from types import SimpleNamespace
import numpy as np, pandas as pd, pytest, torch
from fastai.optimizer import SGD, Adam
from sgd_callbacks.all import *
from sgd_callbacks.bakeoff import run as bakeoff_module
from sgd_callbacks.bakeoff.run import lr_factor, OptEntry, Spec
from sgd_callbacks.bakeoff.score import Hyper, sample_space
from sgd_callbacks.cli import run_bakeoff

def tr(hit=None, loss=1., diverged=False):
    return SimpleNamespace(hit=hit, hit_s=None if hit is None else hit/100, diverged=diverged, losses=[2., loss], metrics=[2., loss], secs=1.)

def problem(name='a', steps=100): return Problem(name, dls_fn=lambda: None, model_fn=lambda dls: None, lrs=(1e-3, 1e-1), steps=steps)

def fake(monkeypatch, answer, **kw):
    "`bakeoff` with `run_trial` answering `answer(call)`; the calls it made"
    calls = []
    def run_trial(pb, entry, lr, s, paths=False, hypers=None, schedule='constant', steps=None, dtype='fp32'):
        calls.append(dict(problem=pb.name, lr=lr, seed=s, hypers=hypers, schedule=schedule, steps=steps)); return answer(calls[-1], len(calls)-1)
    monkeypatch.setattr(bakeoff_module, 'run_trial', run_trial)
    return bakeoff(problems=[problem()], progress=False, file=io.StringIO(), **kw), calls

def test_deepobs_scores_fresh_seeds_only(monkeypatch):
    "Seed 0 tunes; the best lr is rerun on seeds 1..3; a lucky tuning trial (10 steps) does not enter the median"
    def answer(c, i): return tr(10 if c['lr'] == 0.01 and i < 3 else 40 + i)
    res,calls = fake(monkeypatch, answer, opts={'sgd': SGD}, trials=3, seeds=3)
    assert res.results.lr.tolist() == [0.01] and res.results.steps_to_target.tolist() == [44] # lower median of 43, 44, 45
    t = res.trials
    assert t[t.stage == 'tune'].seed.tolist() == [0, 0, 0] and not t[t.stage == 'tune'].scored.any()
    assert sorted(t[t.scored].seed) == [1, 2, 3]

def test_algoperf_best_trial_per_study_then_median(monkeypatch):
    "Each study: the trial that reaches the target at the earliest evaluation; the problem: the median over 3 studies"
    hits = {0: [None, 30, 20], 1: [50, None, 60], 2: [None, None, None]}   # study k's three trials
    def answer(c, i): h = hits[i//3][i % 3]; return tr(h, loss=0.5 if h is None else 0.1)
    res,calls = fake(monkeypatch, answer, opts={'adam': Adam}, protocol='algoperf', trials=3, studies=3)
    assert res.results.steps_to_target.tolist() == [50]                 # np.median of (20, 50, inf)
    assert res.results.reached.tolist() == [pytest.approx(2/3)]         # two studies of three reach it
    assert len(calls) == 9 and len({c['seed'] for c in calls}) == 9     # every trial its own seed
    cfgs = [dict(lr=c['lr'], **c['hypers']) for c in calls]
    space = OptEntry(Adam).search_space((1e-3, 1e-1), 'warmup_cosine')  # the default schedule: the warm-up is tuned too
    assert set(cfgs[0]) == set(space) == {'lr', 'one_minus_beta1', 'one_minus_beta2', 'wd', 'warmup'}
    assert all(space[k].lo <= v <= space[k].hi for c in cfgs for k,v in c.items())
    assert cfgs[:3] != cfgs[3:6]                                        # each study its own Halton draws
    assert res.results.lr.tolist() == [cfgs[3]['lr']]                   # the median study's (the second's) best trial: its first

def test_algoperf_median_study_with_two_misses_is_unsolved(monkeypatch):
    hits = [None, 30, None, None, None, None, None, None, None]       # one study of three reaches it: the median is inf
    res,_ = fake(monkeypatch, lambda c, i: tr(hits[i]), opts={'adam': Adam}, protocol='algoperf', trials=3, studies=3)
    assert res.results.steps_to_target.isna().all() and res.results.reached.tolist() == [pytest.approx(1/3)]

def test_self_tuning_runs_the_defaults_with_a_longer_budget(monkeypatch):
    res,calls = fake(monkeypatch, lambda c, i: tr(10*(i+1)), opts={'lion': BAKEOFF_OPTS['lion'], 'sgd': SGD}, protocol='self-tuning',
                     studies=2, schedule='warmup_cosine')
    assert [c['lr'] for c in calls] == [1e-4, 1e-4, 1e-3, 1e-3]         # each optimizer's published default, every study
    assert {c['steps'] for c in calls} == {150} and all(c['hypers'] == {'warmup': 0.05} for c in calls)
    assert res.results.steps_to_target.tolist() == [15, 35]             # numpy's median of two studies

def test_halton_draws_are_reproducible_and_spread():
    space = dict(lr=Hyper(1e-4, 1.), b=Hyper(0., 1., log=False))
    a,b = sample_space(space, 16, 3),sample_space(space, 16, 3)
    assert a == b and a != sample_space(space, 16, 4)
    u = np.array([[space['lr'].position(c['lr']), c['b']] for c in a])
    assert all(np.histogram(u[:, j], bins=4, range=(0, 1))[0].min() >= 3 for j in range(2)) # quasi-random: every quarter visited

def test_warmup_cosine_factor():
    f = [lr_factor(i, 100, 0.1) for i in range(100)]
    assert f[:10] == [(i+1)/10 for i in range(10)] and f[10] == 1.
    assert all(a > b for a,b in zip(f[10:], f[11:])) and 0 < f[-1] < 1e-3   # cosine down to (almost) zero at the budget's end
    assert lr_factor(0, 100, 0.) == 1.

def test_schedule_is_applied_and_fast_path_equals_learner():
    "Under warmup_cosine the plain loop and the Learner set the same lr before every step: the same weights, bit for bit"
    pb = BAKEOFF_PROBLEMS['rosenbrock']
    small = Problem('r', pb.dls_fn, pb.model_fn, pb.loss_func, pb.target, steps=30, lrs=pb.lrs, every=3)
    a,b = (run_trial(small, Adam, 1e-2, 7, paths=True, fast=f, hypers=dict(warmup=0.2), schedule='warmup_cosine') for f in (True, False))
    c = run_trial(small, Adam, 1e-2, 7, paths=True, fast=True)
    assert torch.equal(torch.stack(a.ws), torch.stack(b.ws)) and not torch.equal(a.ws[-1], a.ws[0])
    assert not torch.equal(a.ws[-1], c.ws[-1])                          # the schedule changed the run
    w1 = a.ws[1] - a.ws[0]; c1 = c.ws[1] - c.ws[0]                      # Adam's first step is lr-sized: 1/6 of it under warm-up
    assert torch.allclose(w1, c1/6, rtol=1e-4)
    sf = run_trial(small, BAKEOFF_OPTS['schedulefree'], 1e-2, 7, paths=True, schedule='warmup_cosine')
    sf0 = run_trial(small, BAKEOFF_OPTS['schedulefree'], 1e-2, 7, paths=True)
    assert torch.equal(torch.stack(sf.ws), torch.stack(sf0.ws))         # schedule-free: no schedule applied

def test_the_command_warns_at_the_edge_of_the_range():
    out,err = io.StringIO(),io.StringIO()
    assert run_bakeoff(problems='line', opts='adam', trials=2, seeds=1, lr_min=1e-3, lr_max=1e-2, file=out, err=err, progress=False) == 0
    assert "sgd_bakeoff: warning: line adam: best lr=0.01 at the high end of 0.001..0.01: the best may lie beyond it" in err.getvalue()
    assert 'schedule warmup_cosine, time in steps' in out.getvalue()      # AlgoPerf's schedule by default

@pytest.mark.parametrize('kw,msg', [(dict(protocol='grid'), '--protocol must be one of deepobs, algoperf, self-tuning'),
                                    (dict(schedule='cosine'), '--schedule must be one of constant, warmup_cosine'),
                                    (dict(time='epochs'), '--time must be one of steps, seconds'),
                                    (dict(reference='lion', opts='adam'), "--reference 'lion' is not one of the optimizers run"),
                                    (dict(protocol='self-tuning', trials=3), '--trials is 1 under the self-tuning protocol'),
                                    (dict(studies=0, protocol='algoperf'), 'studies')])
def test_bad_protocol_arguments(kw, msg):
    err = io.StringIO()
    assert run_bakeoff(problems='line', err=err, file=io.StringIO(), **kw) == 2
    assert msg in err.getvalue()

def test_a_studys_time_is_its_earliest_trial(monkeypatch):
    "Not the first trial that reaches the target: the one that reaches it at the earliest evaluation"
    hits = [None, 30, 20]
    res,_ = fake(monkeypatch, lambda c, i: tr(hits[i]), opts={'adam': Adam}, protocol='algoperf', trials=3, studies=1)
    assert res.results.steps_to_target.tolist() == [20] and res.results.seconds_to_target.tolist() == [0.2]
