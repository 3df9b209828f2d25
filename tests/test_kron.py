"""PSGD Kron as a rule: `kron_rule` against kron_torch's `Kron` (run eagerly) over 50 steps on an MLP with matrix
weights and biases, weight decay on and off, the update every step and a schedule, in a `Learner`, on tensors of 1
to 4 dims with each `memory_save_mode`; mutants of the rule caught; the schedule in float32; memory; bad input."""
import contextlib, copy, functools, io, re
import pytest, torch
from torch import nn
from fastai.basics import Learner, OptimWrapper, partial, set_seed
import fastai.callback.schedule
from kron_torch import Kron
from kron_torch.kron import precond_update_prob_schedule
import sgd_callbacks.optim.kron as K
from sgd_callbacks.optim.kron import kron_rule, kron_prob, kron_due, kron_memory, eager_kron
from sgd_callbacks.optim.step import rule_opt, RuleError
from sgd_callbacks.data import diabetes_dls
from sgd_callbacks.seeding import EpochShuffle
from sgd_callbacks.scratch import mse

def mlp(): return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
FAST = partial(kron_prob, flat_start=10, decay=0.1) # skips updates after step 10 (p = 0.03 by step 45)
REF_KW = dict(wd='weight_decay', precond_prob='preconditioner_update_probability')

def train(make, steps=50, seed=0, model=mlp):
    "`model` trained `steps` full-batch steps by `make(params)`, the global generator seeded `seed` first (the probes')"
    torch.manual_seed(1); m = model(); x,y = torch.randn(32, 8), torch.randn(32, 4)
    opt = make(list(m.parameters()))
    torch.manual_seed(seed)
    for _ in range(steps):
        ((m(x)-y)**2).mean().backward(); opt.step(); opt.zero_grad()
    return m,opt

def Qs(m, state): return [q for p in m.parameters() for q in state[p]['Q']]

def pair(steps=50, lr=0.01, **hp):
    "The reference and the rule trained alike, with `hp` in the rule's names"
    ref = train(lambda ps: eager_kron(ps, lr=lr, **{REF_KW.get(k, k): v for k,v in hp.items()}), steps)
    return ref,train(lambda ps: rule_opt(kron_rule, **hp)(ps, lr=lr), steps)

def same(ref, ours):
    (mr,ro),(mo,oo) = ref,ours
    return (all(torch.equal(a, b) for a,b in zip(mr.parameters(), mo.parameters())) and
            all(torch.equal(a, b) for a,b in zip(Qs(mr, ro.state), Qs(mo, oo.state))))

@pytest.mark.parametrize('wd', [0., 0.1])
@pytest.mark.parametrize('prob', [1., None, FAST], ids=['p=1', 'schedule', 'fast schedule'])
def test_rule_matches_kron_torch_over_50_steps(wd, prob):
    "Weights and every factor Q bit for bit; the weights moved; a balancing step (the 20th) among them"
    ref,ours = pair(wd=wd, precond_prob=prob)
    assert same(ref, ours)
    m0 = train(lambda ps: torch.optim.SGD(ps, lr=0.), 1)[0]
    assert not any(torch.equal(a, b) for a,b in zip(ours[0].parameters(), m0.parameters()))
    st = ours[1].state[next(ours[0].parameters())]
    assert st['update_counter'] == ref[1]._update_counter.item() and st['prob_step'] == ref[1]._prob_step.item() == 50
    if prob is FAST: assert st['update_counter'] > 0 # updates were skipped

@pytest.mark.parametrize('mutant', ['no_balance', 'max_abs_norm', 'undamped_step', 'extra_draw', 'wd_on_biases'])
def test_a_changed_rule_is_caught(monkeypatch, mutant):
    "One operation changed in the rule: the 50-step comparison fails"
    if mutant == 'no_balance': monkeypatch.setattr(K, 'kron_balance', lambda Q: None)
    if mutant == 'max_abs_norm': monkeypatch.setattr(K, 'kron_norm_lb', lambda A, max_abs: max_abs) # no power step
    probe = K.kron_probe
    if mutant == 'undamped_step': # the probe's damping kept out of the momentum that is preconditioned
        monkeypatch.setattr(K, 'kron_probe', lambda G, Q, e: probe(G.clone(), Q, e))
    if mutant == 'extra_draw': # one more number drawn from the generator before each probe: other probes
        def late(G, Q, e): torch.randn(1); return probe(G, Q, e)
        monkeypatch.setattr(K, 'kron_probe', late)
    if mutant == 'wd_on_biases':
        @functools.wraps(kron_rule)
        def decay_all(ps, gs, states, hypers, **kw):
            for p,o in zip(ps, hypers):
                if p.dim() < 2: p.mul_(1 - o['lr']*o['wd'])
            return kron_rule(ps, gs, states, hypers, **kw)
        decay_all.whole_step = True
        ref = train(lambda ps: eager_kron(ps, lr=0.01, weight_decay=0.1))
        assert not same(ref, train(lambda ps: rule_opt(decay_all, wd=0.1)(ps, lr=0.01))); return
    assert not same(*pair(wd=0.1))

def conv():
    "A 3-D conv kernel, its bias, and a matrix without one"
    return nn.Sequential(nn.Unflatten(1, (2, 4)), nn.Conv1d(2, 3, 3, padding=1), nn.Flatten(),
                         nn.Linear(12, 4, bias=False))

@pytest.mark.parametrize('mode', [None, 'smart_one_diag', 'one_diag', 'all_diag'])
@pytest.mark.parametrize('merge', [True, False])
def test_more_shapes_and_options(mode, merge):
    "A 3-D conv kernel (merged into a matrix, or three factors), a 1×n row, momentum or raw gradient into Q"
    for into in (True, False):
        hp = dict(memory_save_mode=mode, merge_dims=merge, momentum_into_precond_update=into, wd=0.1,
                  precond_init_scale=2.)
        make_ref = lambda ps: eager_kron(ps, lr=0.01, **{REF_KW.get(k, k): v for k,v in hp.items()})
        ours = train(lambda ps: rule_opt(kron_rule, **hp)(ps, lr=0.01), 12, model=conv)
        assert same(train(make_ref, 12, model=conv), ours)

def test_in_a_learner_with_one_cycle():
    "fit_one_cycle schedules `mom` (the reference's `b1`) and lr; with weight decay; the same weights and Q"
    set_seed(0); m0 = nn.Sequential(nn.Linear(11, 16), nn.ReLU(), nn.Linear(16, 1))
    def fit(opt_func):
        learn = Learner(diabetes_dls(bs=64), copy.deepcopy(m0), loss_func=mse, opt_func=opt_func, lr=3e-3, wd=0.05,
                        cbs=EpochShuffle(0))
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(5)
        return learn
    ref = fit(partial(OptimWrapper, opt=eager_kron, hp_map=dict(b1='mom', weight_decay='wd')))
    ours = fit(rule_opt(kron_rule))
    assert all(torch.equal(a, b) for a,b in zip(ref.model.parameters(), ours.model.parameters()))
    assert all(torch.equal(a, b) for a,b in zip(Qs(ref.model, ref.opt.opt.state), Qs(ours.model, ours.opt.state)))
    assert not all(torch.equal(a, b) for a,b in zip(m0.parameters(), ours.model.parameters()))

def test_schedule_is_kron_torchs_in_float32():
    ref = precond_update_prob_schedule()
    with torch.compiler.set_stance('force_eager'):
        for n in range(0, 6000, 7):
            assert torch.equal(kron_prob(torch.tensor(n, dtype=torch.float32)), ref(torch.tensor(float(n))))
    assert kron_due(49, 1/49) and not 49 >= 1/(1/49) # float32, as the reference's int32 counter compares
    assert not kron_due(2, 1/3) and kron_due(3, 1/3)

def test_memory_is_what_the_reference_reports():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), torch.compiler.set_stance('force_eager'): train(lambda ps: Kron(ps), 1)
    m,opt = train(lambda ps: rule_opt(kron_rule)(ps, lr=0.01), 1)
    mem = kron_memory(m.parameters(), opt.state)
    assert list(mem['shape']) == ['16×8', '16', '16×16', '16', '4×16', '4']
    assert [mem.momentum.sum(), mem.Q.sum()] == [int(n) for n in re.findall(r'size: (\d+) elements', out.getvalue())]
    assert mem.bytes.sum() == 4*(mem.momentum.sum() + mem.Q.sum())

def test_bad_input_names_the_argument():
    for bad in (0., 1.5, 'often'):
        with pytest.raises(RuleError, match='`precond_prob` must be'): # the first step is checked: its error, named
            train(lambda ps: rule_opt(kron_rule, precond_prob=bad)(ps, lr=0.01), 1)
    with pytest.raises(RuleError, match='`memory_save_mode` must be'):
        train(lambda ps: rule_opt(kron_rule, memory_save_mode='some')(ps, lr=0.01), 1)

def test_channels_last_conv():
    "A channels_last 4-D kernel: its gradient is not contiguous; `Kron` is handed a contiguous copy, the rule reshapes"
    def net(): return nn.Sequential(nn.Unflatten(1, (2, 2, 2)), nn.Conv2d(2, 3, 2, padding=1), nn.Flatten(),
                                    nn.Linear(27, 4)).to(memory_format=torch.channels_last)
    ref = train(lambda ps: eager_kron(ps, lr=0.01), 12, model=net)
    ours = train(lambda ps: rule_opt(kron_rule)(ps, lr=0.01), 12, model=net)
    w = ours[0][1].weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    with pytest.raises(RuntimeError, match='view size'): train(lambda ps: Kron(ps, lr=0.01), 1, model=net) # no copy
    assert same(ref, ours)

@pytest.mark.parametrize('hp', [dict(mu_dtype=torch.bfloat16), dict(precond_dtype=torch.float64)], ids=['mu bf16', 'Q fp64'])
def test_dtypes(hp):
    "A bfloat16 momentum, float64 factors (its triangular solves in float32, as the reference's)"
    ref,ours = pair(20, **hp)
    assert same(ref, ours) and ours[1].state[next(ours[0].parameters())]['Q'][0].dtype == (hp.get('precond_dtype') or torch.float32)
