"""16-bit weights: Kahan summation bit for bit against torch-optimi, stochastic rounding bit for bit against torchao's
`_fp32_to_bf16_sr`, float32 weights unchanged by either option, the lesson's line of the issue's table, bad input, and
the divergence check, `compare_optimizers` and the bake-off on 16-bit weights."""
import copy, io, math
import pandas as pd, pytest, torch
from torch import nn
from fastai.basics import Learner, SGD, Lamb, partial
from sgd_callbacks.all import *
from sgd_callbacks.scratch import mse
from sgd_callbacks.lowbit import bf16_sr, kahan_fold
from sgd_callbacks.optim.step import optimi_adamw_rule, lowbit_rule
from sgd_callbacks.loaders import tensor_dls
optimi = pytest.importorskip('optimi')
quant_utils = pytest.importorskip('torchao.optim.quant_utils')

def mlp(dtype=torch.bfloat16):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)).to(dtype)

def batches(n=150):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 16, 8, generator=g)
    return [(xb, xb[:, :1]*2 - xb[:, 1:2] + 0.1*torch.randn(16, 1, generator=g)) for xb in x]

def train(model, step, n=150):
    "`n` steps of a small regression; `step()` steps the weights and zeroes the gradients"
    for x,y in batches(n):
        p = next(model.parameters())
        ((model(x.to(p.dtype)).float() - y)**2).mean().backward()
        step()
    return [p.detach().clone() for p in model.parameters()]

def opt_train(model, opt, n=150): return train(model, lambda: (opt.step(), opt.zero_grad()), n)

def equal(ws, vs): return len(ws) == len(vs) and all(torch.equal(w, v) for w,v in zip(ws, vs))

def init(dtype=torch.bfloat16): return [p.detach() for p in mlp(dtype).parameters()]

def dist(ws, vs): return torch.cat([(w.float() - v.float()).flatten() for w,v in zip(ws, vs)]).norm().item()

SGD_HP = dict(lr=0.05, mom=0.9, wd=0.01)

# ---- Kahan summation: torch-optimi's arithmetic, bit for bit

def test_kahan_sgd_is_optimi():
    "Decoupled decay by `lr*wd` = 0.005, above bf16's relative half spacing (2**-9): smaller, the decay rounds away"
    ref = mlp(); ours = mlp()
    want = opt_train(ref, optimi.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1, decouple_wd=True,
                                     kahan_sum=True, foreach=False))
    hp = dict(use_mom=True, lr=0.05, mom=0.9, wd=0.1)
    got = opt_train(ours, RuleOptimizer(list(ours.parameters()), sgd_rule, kahan=True, **hp))
    assert equal(got, want)
    plain = mlp()
    assert not equal(opt_train(plain, RuleOptimizer(list(plain.parameters()), sgd_rule, **hp)), want)

def test_kahan_sgd_l2_is_optimi():
    ref = mlp(); ours = mlp()
    want = opt_train(ref, optimi.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01, kahan_sum=True,
                                     foreach=False))
    got = opt_train(ours, RuleOptimizer(list(ours.parameters()), sgd_rule, kahan=True, use_mom=True, decouple_wd=False,
                                        **SGD_HP))
    assert equal(got, want)
    plain = mlp() # the weights move, and Kahan changes where they go
    assert dist(got, init()) > 0.1
    assert not equal(opt_train(plain, RuleOptimizer(list(plain.parameters()), sgd_rule, use_mom=True, decouple_wd=False,
                                                    **SGD_HP)), want)

def test_kahan_adamw_is_optimi():
    ref = mlp(); ours = mlp()
    want = opt_train(ref, optimi.AdamW(ref.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01, eps=1e-6,
                                       kahan_sum=True, foreach=False))
    got = opt_train(ours, RuleOptimizer(list(ours.parameters()), optimi_adamw_rule, kahan=True, lr=1e-3))
    assert equal(got, want)
    plain = mlp() # the weights move, and Kahan changes where they go
    assert dist(got, init()) > 0.1
    assert not equal(opt_train(plain, RuleOptimizer(list(plain.parameters()), optimi_adamw_rule, lr=1e-3)), want)
    ref32 = mlp(torch.float32); ours32 = mlp(torch.float32) # and without Kahan, in float32, optimi's arithmetic still
    assert equal(opt_train(ours32, RuleOptimizer(list(ours32.parameters()), optimi_adamw_rule, lr=1e-3)),
                 opt_train(ref32, optimi.AdamW(ref32.parameters(), lr=1e-3, foreach=False)))

# ---- Kahan on fastai's other additive rules, which no reference computes in 16 bits: the bf16 run tracks float32's

# learning rates at which most updates fall below half a spacing of bf16 (the weights are about 0.1 to 0.35)
TRACK = {'lesson': (lesson_rule, dict(lr=3e-4)), 'rmsprop': (rmsprop_rule, dict(lr=1e-4)),
         'adam': (adam_rule, dict(lr=3e-4, wd=0.01)), 'radam': (radam_rule, dict(lr=3e-4)),
         'qhadam': (qhadam_rule, dict(lr=3e-4))}

@pytest.mark.parametrize('name', list(TRACK))
def test_kahan_tracks_fp32(name):
    """From the same start, the bf16 run with `kahan=True` ends near the float32 run (what is left: the rule's state and
    arithmetic in 16 bits, the forward pass in bf16), while the plain bf16 run, its updates below half a spacing, does
    not get there"""
    rule,hp = TRACK[name]
    def run(dtype, **opt):
        m = mlp().to(dtype) # the bf16 weights, exactly, in either dtype
        return opt_train(m, RuleOptimizer(list(m.parameters()), rule, **opt, **hp))
    w32,kahan,plain = run(torch.float32),run(torch.bfloat16, kahan=True),run(torch.bfloat16)
    moved = dist(w32, init())
    assert dist(kahan, w32) < 0.1*moved and dist(plain, w32) > 0.5*moved, (moved, dist(kahan, w32), dist(plain, w32))

def bf16_learner(cbs=(), opt_func=SGD, dtype=torch.bfloat16, **kw):
    dls = tensor_dls(*(t.to(dtype) for t in linear_data()), bs=16)
    return Learner(dls, LinearModel().to(dtype), loss_func=lambda p,y: mse(p.float(), y.float()), opt_func=opt_func,
                   cbs=[EpochShuffle(), *cbs], **kw)

def fit(learn, n=5, lr=0.01):
    with learn.no_bar(), learn.no_logging(): learn.fit(n, lr=lr)
    return [p.detach().clone() for p in learn.model.parameters()]

@pytest.mark.parametrize('decouple_wd', [True, False])
@pytest.mark.parametrize('opt', ['kahan', 'stochastic_round'])
def test_scratch_callbacks_as_rule_opt(opt, decouple_wd):
    """ScratchSGD and ScratchStep with an option step as `rule_opt(sgd_rule)` with it (whose Kahan is optimi's); the
    decoupled decay `lr*wd` = 0.004 is above bf16's relative half spacing (2**-9), so that it counts"""
    hp = dict(mom=0.9, wd=4., decouple_wd=decouple_wd)
    sgd = partial(SGD, **hp)
    def run(*a, **kw):
        "The weights and momentum buffers after a fit whose updates are below half a spacing"
        torch.manual_seed(3); learn = bf16_learner(*a, **kw)
        return fit(learn, lr=1e-3) + [learn.opt.state[p]['grad_avg'] for p in learn.model.parameters()]
    want = run(opt_func=rule_opt(sgd_rule, use_mom=True, **hp, **{opt: True}))
    got,step = run([ScratchSGD(**{opt: True})], sgd),run([ScratchStep(**{opt: True})], sgd)
    plain = run([ScratchSGD()], sgd)
    assert equal(got, want) and equal(step, want) and not equal(plain, want)

# ---- stochastic rounding: torchao's draws

def torchao_loop(model, rule, n=150, **hp):
    "The reference: each bf16 weight stepped in float32 by `rule`, rounded back by torchao's function, in order"
    ps,states = list(model.parameters()),{}
    def step():
        for p in ps:
            w = p.detach().float()
            rule(w, p.grad.float(), states.setdefault(p, {}), **hp)
            p.data.copy_(quant_utils._fp32_to_bf16_sr(w))
            p.grad = None
    return train(model, step, n)

@pytest.mark.parametrize('rule,hp', [(sgd_rule, dict(use_mom=True, **SGD_HP)), (adam_rule, dict(lr=1e-3, wd=0.01))])
def test_stochastic_round_is_torchao(rule, hp):
    ref = mlp(); torch.manual_seed(7); want = torchao_loop(ref, rule, **hp)
    ours = mlp(); torch.manual_seed(7)
    got = opt_train(ours, RuleOptimizer(list(ours.parameters()), rule, stochastic_round=True, **hp))
    assert equal(got, want)
    other = mlp(); torch.manual_seed(8) # another generator state, other draws
    assert not equal(opt_train(other, RuleOptimizer(list(other.parameters()), rule, stochastic_round=True, **hp)), want)

def test_bf16_sr_is_torchao():
    x = torch.randn(1 << 20, 33) * torch.logspace(-20, 20, 33) # enough draws that some equal the dropped bits
    torch.manual_seed(0); a = bf16_sr(x)
    torch.manual_seed(0); b = quant_utils._fp32_to_bf16_sr(x)
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))

def test_bf16_sr_unbiased():
    torch.manual_seed(0)
    r = bf16_sr(torch.full((200_000,), 3 + 0.25/64)).float()
    assert set(r.unique().tolist()) == {3., 3 + 1/64}
    assert abs((r == 3 + 1/64).float().mean().item() - 0.25) < 0.005

# ---- float32 weights step exactly as without either option

@pytest.mark.parametrize('opt', ['kahan', 'stochastic_round'])
def test_fp32_unchanged(opt):
    for rule,hp in ((sgd_rule, dict(use_mom=True, **SGD_HP)), (adam_rule, dict(lr=1e-3, wd=0.01))):
        a = mlp(torch.float32); b = mlp(torch.float32)
        torch.manual_seed(0); want = opt_train(a, RuleOptimizer(list(a.parameters()), rule, **hp), 30)
        torch.manual_seed(0); got = opt_train(b, RuleOptimizer(list(b.parameters()), rule, **{opt: True}, **hp), 30)
        assert equal(got, want)
    sgd = partial(SGD, mom=0.9, wd=0.01)
    want = fit(bf16_learner([ScratchSGD()], sgd, dtype=torch.float32))
    assert equal(fit(bf16_learner([ScratchSGD(**{opt: True})], sgd, dtype=torch.float32)), want)
    assert equal(fit(bf16_learner([ScratchStep(**{opt: True})], sgd, dtype=torch.float32)), want)

# ---- the table: the lesson's line, seed 42, a from (-1, 1), lr 0.01, 3000 steps, full batch

def lesson_line(dtype, **opts):
    torch.manual_seed(42)
    x = torch.ones(100, 2); x[:, 0].uniform_(-1., 1); y = x@torch.tensor([3., 2]) + torch.rand(100)
    a = nn.Parameter(torch.tensor([-1., 1.], dtype=dtype))
    opt = RuleOptimizer([a], sgd_rule, lr=0.01, **opts)
    torch.manual_seed(0)
    for _ in range(3000):
        mse(x.to(dtype)@a, y.to(dtype)).backward()
        opt.step(); opt.zero_grad()
    return mse(x@a.detach().float(), y).item(),a.detach().float()

def test_lesson_line_table():
    l32,a32 = lesson_line(torch.float32)
    assert round(l32, 4) == 0.0746 and torch.allclose(a32, torch.tensor([3.054, 2.456]), atol=5e-4)
    lb,ab = lesson_line(torch.bfloat16)
    assert round(lb, 3) == 0.567 and torch.equal(ab, torch.tensor([2., 2.15625])) # stalled: 2.156 is a bf16
    for o in ('kahan', 'stochastic_round'):
        l,_ = lesson_line(torch.bfloat16, **{o: True})
        assert abs(l - l32) < 0.02*l32, (o, l, l32)

# ---- bad input: a clear error naming the option, nothing trained

def test_bad_input():
    with pytest.raises(ValueError, match='choose one'): rule_opt(sgd_rule, kahan=True, stochastic_round=True)
    with pytest.raises(ValueError, match='choose one'): ScratchSGD(kahan=True, stochastic_round=True)
    with pytest.raises(ValueError, match='choose one'): ScratchStep(kahan=True, stochastic_round=True)
    for rule in (lamb_rule, larc_rule, muon_rule):
        with pytest.raises(TypeError, match='`kahan=True`'): rule_opt(rule, kahan=True)
        with pytest.raises(TypeError, match='`kahan=True`'): ScratchStep(rule=rule, kahan=True)
    whole = additive(whole_step(lambda ps, gs, states, hypers, lr=0.1: [p.add_(g, alpha=-lr) for p,g in zip(ps, gs)]))
    with pytest.raises(TypeError, match='`kahan=True`.*whole step'): rule_opt(whole, kahan=True)
    with pytest.raises(TypeError, match='`kahan=True`.*whole step'): ScratchStep(rule=whole, kahan=True)
    learn = bf16_learner([ScratchStep(kahan=True)], Lamb)
    w0 = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.raises(TypeError, match='`kahan=True`'): fit(learn)
    assert equal([p.detach() for p in learn.model.parameters()], w0) # nothing trained
    for opt in ('kahan', 'stochastic_round'):
        for learn in (bf16_learner(opt_func=rule_opt(sgd_rule, **{opt: True}), dtype=torch.float64),
                      bf16_learner([ScratchSGD(**{opt: True})], dtype=torch.float64),
                      bf16_learner([ScratchStep(**{opt: True})], dtype=torch.float64)):
            w0 = [p.detach().clone() for p in learn.model.parameters()]
            with pytest.raises(TypeError, match=f'`{opt}=True`.*float64'): fit(learn)
            assert equal([p.detach() for p in learn.model.parameters()], w0) # nothing trained
    with pytest.raises(TypeError, match='`stochastic_round=True`.*float16'):
        fit(bf16_learner([ScratchSGD(stochastic_round=True)], dtype=torch.float16))
    with pytest.raises(TypeError, match='`kahan=True`.*Lookahead'):
        from fastai.optimizer import ranger
        fit(bf16_learner([ScratchStep(kahan=True)], ranger))

# ---- the divergence check in pure bf16: stopped at the first non-finite gradient, the weights those of the last step

@pytest.mark.parametrize('opt', ['kahan', 'stochastic_round'])
def test_diverges_cleanly_in_bf16(opt):
    for cb in (ScratchSGD(**{opt: True}), ScratchStep(**{opt: True})):
        learn = bf16_learner([cb], partial(SGD, mom=0.9))
        with pytest.raises(DivergedError, match='non-finite'): fit(learn, 20, lr=50.)
        assert all(p.dtype == torch.bfloat16 and p.isfinite().all() for p in learn.model.parameters())

# ---- the bake-off in pure 16 bits: `sgd_bakeoff --dtype` threaded to every trial, in the CSVs and the report

def test_bakeoff_dtype(tmp_path):
    from sgd_callbacks.bakeoff.run import run_trial
    from sgd_callbacks.cli import run_bakeoff
    seen = []
    def spy(params, **kw):
        params = list(params); seen.append({p.dtype for p in params})
        return SGD(params, **kw)
    pb = BAKEOFF_PROBLEMS['line']
    fp32,bf16 = (run_trial(pb, spy, 0.01, 0, dtype=d) for d in ('fp32', 'bf16'))
    assert seen == [{torch.float32}, {torch.bfloat16}] and fp32.losses != bf16.losses
    assert all(map(math.isfinite, bf16.losses))
    opts = {'sgd': SGD, 'sgd_kahan': rule_opt(sgd_rule, kahan=True)}
    res = bakeoff(['line'], opts, trials=1, seeds=1, progress=False, dtype='bf16')
    assert set(res.trials.dtype) == {'bf16'} and res.meta['dtype'] == 'bf16'
    ref = bakeoff(['line'], {'sgd': SGD}, trials=1, seeds=1, progress=False).trials
    assert 'dtype' not in ref # float32 runs as before
    bf = res.trials[res.trials.optimizer == 'sgd']
    assert list(bf.lr) == list(ref.lr) and list(bf.final_loss) != list(ref.final_loss) # the same trials, in bf16
    out,err = io.StringIO(),io.StringIO()
    kw = dict(problems='line', opts='sgd', file=out, err=err)
    assert run_bakeoff(trials=1, seeds=1, out=tmp_path, dtype='bf16', **kw) == 0
    assert all(set(pd.read_csv(tmp_path/f).dtype) == {'bf16'} for f in ('trials.csv', 'results.csv'))
    assert 'weights bf16' in out.getvalue().splitlines()[0] # the header says what is trained
    assert 'bf16 (pure 16-bit training)' in (tmp_path/'index.html').read_text()
    assert run_bakeoff(dtype='fp64', **kw) == 2 and '--dtype' in err.getvalue()

# ---- compare_optimizers on 16-bit weights: the lesson's step is fastai's SGD, bit for bit, in pure bf16 too

def test_compare_optimizers_in_bf16():
    from sgd_callbacks.lowbit import in_dtype
    for mom,wd in ((0., 0.), (0.9, 0.1)):
        res = compare_optimizers(model_fn=lambda dls: in_dtype(LinearModel(2), 'bf16'), mom=mom, wd=wd, lr=0.01,
                                 loss_func=lambda p,y: mse(p, y.float()))
        assert {p.dtype for m in res.models.values() for p in m.parameters()} == {torch.bfloat16}
        assert all(v is True or v == 'n/a' for v in res.df.identical), res.df[['contender', 'identical']]
        assert (res.df.identical == True).sum() >= 3
