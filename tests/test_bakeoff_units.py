"""The bake-off's small print on hand-made traces, no training: the tuning order (fewest steps, then the final loss,
diverged last), the divergence threshold on a finite loss, the profile's range for a `tau_max` other than 4, the grid of one
trial, and a trial's seed drawn from its whole key, the problem's name included."""
import io, math, zlib
from types import SimpleNamespace
import numpy as np, pandas as pd, pytest, torch
from torch import nn
from fastai.optimizer import SGD
from sgd_callbacks.all import *
# private names, in one place
from sgd_callbacks.bakeoff import run as bakeoff_module
from sgd_callbacks.bakeoff.run import _grid, _key, Trace, trial_seed, DIVERGE

def tr(hit=None, loss=1., diverged=False):
    "A finished trial as the bake-off reads it"
    return SimpleNamespace(hit=hit, hit_s=None if hit is None else hit/100, diverged=diverged, losses=[2., loss], metrics=[2., loss], secs=1.)

def problem(name, lrs=(1e-3, 1e-1)): return Problem(name, dls_fn=lambda: None, model_fn=lambda dls: None, lrs=lrs, steps=100)

def fake_bakeoff(monkeypatch, by_lr, names=('a',), seeds=1, trials=3):
    "`bakeoff` with `run_trial` answering from `by_lr` (lr -> trace); the `(problem, lr, seed)` it was asked for"
    asked = []
    def run_trial(pb, entry, lr, s, paths=False, **kw):
        asked.append((pb.name, lr, s)); return by_lr[lr]
    monkeypatch.setattr(bakeoff_module, 'run_trial', run_trial)
    res = bakeoff(problems=[problem(n) for n in names], opts={'sgd': SGD}, trials=trials, seeds=seeds, progress=False, file=io.StringIO(),
                  schedule='constant')
    return res, asked

def test_the_grid():
    assert _grid((1e-3, 1e-1), 1) == [0.01]                        # one trial: the geometric mean, not an end
    assert _grid((1e-3, 1e-1), 3) == [0.001, 0.01, 0.1]
    assert _grid((0.25, 4.), 2) == [0.25, 4.]

def test_equal_steps_to_target_are_broken_by_the_final_loss(monkeypatch):
    res,_ = fake_bakeoff(monkeypatch, {0.001: tr(10, 0.5), 0.01: tr(10, 0.2), 0.1: tr(None, 0.01)})
    assert res.results.lr.tolist() == [0.01] and res.results.steps_to_target.tolist() == [10]
    assert res.results.final_loss.tolist() == [0.2]

def test_a_diverged_trial_ranks_last_whatever_its_last_loss(monkeypatch):
    "No trial reaches the target: the lowest final loss wins, and a diverged trial's last (finite, low) loss does not count"
    res,_ = fake_bakeoff(monkeypatch, {0.001: tr(None, 0.5), 0.01: tr(None, 0.1, diverged=True), 0.1: tr(None, 0.3)})
    assert res.results.lr.tolist() == [0.1]
    t = res.trials.set_index('lr')
    assert t.final_loss[0.01] == math.inf and t.diverged[0.01]
    order = sorted([tr(None, 0.1, diverged=True), tr(None, float('nan')), tr(None, 0.3), tr(50, 0.9)], key=_key)
    assert [(o.hit, o.losses[-1]) for o in order[:2]] == [(50, 0.9), (None, 0.3)]
    assert _key(order[2]) == _key(order[3]) == (math.inf, math.inf)   # diverged, or a NaN final loss: last

def test_the_winner_on_equal_steps_is_the_lower_final_loss():
    "`winners`: the fewest median steps to target, then the lowest final loss (not the first listed); '-' where none reached it"
    res = pd.DataFrame(dict(problem=list('ppqqrr'), optimizer=list('ABABAB'), final_loss=[0.3, 0.2, 0.9, 0.1, 0.1, 0.5],
                            steps_to_target=pd.array([10, 10, 5, 10, None, None], dtype='Int64')))
    r = BakeoffResult(res, None, None, None, {}, dict.fromkeys('pqr'), {})
    assert r.winners() == {'p': 'B', 'q': 'A', 'r': '-'}

def test_a_trials_seed_comes_from_its_whole_key(monkeypatch):
    "Two problems alike but for their names: different seeds for the same optimizer, lr and seed number"
    by_lr = {0.001: tr(10, 0.5), 0.01: tr(20, 0.2), 0.1: tr(None, 0.01)}
    _,asked = fake_bakeoff(monkeypatch, by_lr, names=('a', 'b'), seeds=2)
    for p,lr,s in asked[:3]: assert s == trial_seed(p, 'sgd', lr, 0) == zlib.crc32(repr((p, 'sgd', lr, 0)).encode())
    assert ('a', 0.001, trial_seed('a', 'sgd', 0.001, 1)) in asked[3:]      # the best lr, seed 1
    a,b = ({s for q,_,s in asked if q == p} for p in ('a', 'b'))
    assert len(a) == len(b) == 5 and not a & b                          # 3 lrs on seed 0, the best on fresh seeds 1 and 2
    assert trial_seed('a', 'sgd', 0.01, 0) != trial_seed('b', 'sgd', 0.01, 0) != trial_seed('b', 'sgd', 0.01, 1)

# ---- divergence: a finite validation loss growing past DIVERGE × its first value

class Out(nn.Module):
    "A model whose prediction, on any input, is the number `v`"
    def __init__(self): super().__init__(); self.v = 1.
    def forward(self, x): return torch.full((len(x),), self.v)

def trace(first):
    pb = SimpleNamespace(every=1, steps=10, reached=lambda m: False)
    t,m = Trace(pb, torch.zeros(4, 1), torch.zeros(4), lambda p, y: p.mean(), lambda p, y: p.mean()),Out()
    m.v = first; assert t.start(m)
    return t,m

@pytest.mark.parametrize('first', [1., 2.])
def test_a_finite_loss_past_the_threshold_diverges(first):
    t,m = trace(first)
    for step,v in enumerate([DIVERGE*first/2, DIVERGE*first], 1): # up to the threshold: still going
        m.v = v; assert t.after_step(m, step, torch.tensor(1.)) and not t.diverged
    m.v = DIVERGE*first*1.01
    assert not t.after_step(m, 3, torch.tensor(1.)) and t.diverged and math.isfinite(t.losses[-1])
    assert t.losses == [first, DIVERGE*first/2, DIVERGE*first, DIVERGE*first*1.01]

def test_a_non_finite_training_loss_diverges():
    t,m = trace(1.)
    assert not t.after_step(m, 1, torch.tensor(float('inf'))) and t.diverged

# ---- the performance profile

def results(rows): return pd.DataFrame(rows, columns=['problem', 'optimizer', 'steps_to_target']).astype({'steps_to_target': 'Int64'})

def test_the_profile_ends_at_tau_max():
    "τ_max = 2: A best on both problems, B 1.5× on one and unsolved on the other; ρ on 100 points from 1 to 2, the area over [1, 2]"
    res = results([('p', 'A', 10), ('p', 'B', 15), ('q', 'A', 20), ('q', 'B', None)])
    prof,scores = performance_profile(res, tau_max=2.)
    for o,df in prof.groupby('optimizer'):
        assert df.tau.min() == 1. and df.tau.max() == 2. and len(df) == 100
    b = prof[prof.optimizer == 'B']
    assert (b.rho[b.tau < 1.5] == 0).all() and (b.rho[b.tau >= 1.5] == 0.5).all()
    assert (prof[prof.optimizer == 'A'].rho == 1.).all()
    s = scores.set_index('optimizer')
    assert s.score['A'] == 1. and s.area['B'] == 0.25 and s.solved['B'] == 1 and s.problems['B'] == 2
    assert s.score['B'] == pytest.approx(np.trapezoid(b.rho, b.tau))      # AlgoPerf's trapezoids ÷ (2 - 1)
    assert scores.optimizer.tolist() == ['A', 'B']
    assert performance_profile(res, tau_max=3.)[1].set_index('optimizer').area['B'] == 0.75/2
