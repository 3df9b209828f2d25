"""Muon and Prodigy as rules: steps against torch's `Muon` + `AdamW` and prodigyopt's `Prodigy` over random shapes and
options, whole fits in a `Learner` bit for bit (an MLP on diabetes, a CNN with BatchNorm on the digits), resume, bad input."""
import copy, warnings
import pytest, torch
from torch import nn
from hypothesis import given, settings, strategies as st
from fastai.basics import Learner, OptimWrapper, Callback, CrossEntropyLossFlat, partial, set_seed
import fastai.callback.schedule, fastai.callback.core
from prodigyopt import Prodigy
from sgd_callbacks.all import *
from sgd_callbacks.scratch import mse
from sgd_callbacks.optim.step import rule_opt
from sgd_callbacks.optim.muon import newton_schulz, MuonAdamW
from sgd_callbacks.optim.torch_rules import torch_adamw_rule
from sgd_callbacks.vision import digits_data

# ---- a few steps on random tensors, against the references' own step

def stepped(ref_opt, rule, shapes, steps, seed, whole=False, **hypers):
    "Parameters stepped by `ref_opt` and by `rule` (two groups: the first two shapes, the rest) with the same random gradients"
    g = torch.Generator().manual_seed(seed)
    ref = [nn.Parameter(torch.randn(tuple(s), generator=g)) for s in shapes]
    ours,moved = [nn.Parameter(p.detach().clone()) for p in ref],[False]*len(ref)
    opt,states = ref_opt([{'params': ref[:2]}, {'params': ref[2:]}]),[{} for _ in ours]
    for _ in range(steps):
        grads = [torch.randn(tuple(s), generator=g) for s in shapes]
        for p,q,gr in zip(ref, ours, grads): p.grad,q.grad = gr.clone(),gr.clone()
        opt.step()
        before = [q.detach().clone() for q in ours]
        with torch.no_grad():
            hs = [dict(do_wd=True, **hypers)]*len(ours)
            if whole: rule(ours, [q.grad for q in ours], states, hs, **hypers)
            else:
                for q,s,h in zip(ours, states, hs): rule(q, q.grad, s, **h)
        moved = [m or not torch.equal(q, b) for m,q,b in zip(moved, ours, before)]
    assert all(moved) # every parameter took a step (two steps may cancel: ±lr·O for a 1×1 matrix)
    return ref,ours,states

shapes = st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=3), min_size=3, max_size=5)

@settings(max_examples=25, deadline=None)
@given(shapes, st.floats(1e-3, 0.1), st.floats(0., 0.99), st.sampled_from([0., 0.1]), st.sampled_from([0., 0.01]), st.booleans(),
       st.sampled_from(['original', 'match_rms_adamw', 'spectral_unclamped']), st.integers(1, 5), st.integers(0, 2**31))
def test_muon_steps_match_torch(shapes, lr, mom, wd, adam_wd, nesterov, adjust, steps, seed):
    "torch's Muon on the matrices and AdamW on the rest, against `muon_rule` on all: bit for bit"
    ref_opt = lambda groups: MuonAdamW(groups, lr=lr, momentum=mom, weight_decay=wd, adam_wd=adam_wd, nesterov=nesterov, adjust_lr_fn=adjust)
    ref,ours,_ = stepped(ref_opt, muon_rule, shapes, steps, seed, lr=lr, mom=mom, wd=wd, adam_wd=adam_wd, nesterov=nesterov, adjust_lr_fn=adjust)
    for a,b in zip(ref, ours): assert torch.equal(a, b), a.shape

def test_adamw_rule_is_torchs():
    ref,ours,_ = stepped(lambda gs: torch.optim.AdamW(gs, lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1, foreach=False),
                         torch_adamw_rule, [(3, 4), (5,), (2, 3, 3)], 10, 0, lr=0.01, mom=0.8, sqr_mom=0.9, eps=1e-6, wd=0.1)
    for a,b in zip(ref, ours): assert torch.equal(a, b)

def test_newton_schulz_orthogonalises():
    "Singular values spread over two decades come out near one (Keller Jordan's coefficients give 0.7 to 1.2), both orientations"
    G = torch.randn(24, 40, generator=torch.Generator().manual_seed(1)) @ torch.diag(torch.logspace(-2, 0, 40))
    for M in (G, G.T):
        sv = torch.linalg.svdvals(newton_schulz(M).float())
        assert newton_schulz(M).shape == M.shape and 0.6 < sv.min() and sv.max() < 1.25

PRODIGY_OPTS = [dict(), dict(weight_decay=0.1), dict(weight_decay=0.1, decouple=False), dict(use_bias_correction=True),
                dict(safeguard_warmup=True, betas=(0., 0.99)), dict(slice_p=3, growth_rate=1.02, beta3=0.9, d_coef=2.)]

def _prodigy_hypers(kw, lr):
    h = {('decouple_wd' if k == 'decouple' else 'wd' if k == 'weight_decay' else k): v for k,v in kw.items() if k != 'betas'}
    if 'betas' in kw: h.update(mom=kw['betas'][0], sqr_mom=kw['betas'][1])
    return dict(rule_hypers_defaults(), lr=lr, **h)

def rule_hypers_defaults():
    "`prodigy_rule`'s keyword defaults"
    import inspect
    return {k: v.default for k,v in list(inspect.signature(prodigy_rule).parameters.items())[4:]}

@pytest.mark.parametrize('kw', PRODIGY_OPTS, ids=str)
def test_prodigy_steps_match_prodigyopt(kw):
    "30 steps with each option; two groups; the step size `d` the same float"
    made = []
    ref,ours,states = stepped(lambda gs: made.append(Prodigy(gs, lr=1., **kw)) or made[0], prodigy_rule, [(7, 5), (9,), (3, 2, 2), (1,), (6, 6)], 30, 0,
                              whole=True, **_prodigy_hypers(kw, 1.))
    for a,b in zip(ref, ours): assert torch.equal(a, b)
    assert states[0]['d'] == made[0].param_groups[0]['d']

# ---- whole fits in a Learner

def mlp(): return nn.Sequential(nn.Linear(11, 16), nn.ReLU(), nn.Linear(16, 1))

def small_cnn():
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
                         nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                       nn.Linear(8, 10)))

def data(maker):
    "Diabetes; or 320 of the 8×8 digits (5 batches an epoch keep the CNN's fits fast)"
    return diabetes_dls(bs=64) if maker == 'mlp' else tensor_dls(*(t[:320] for t in digits_data(8)), bs=64)

MODELS = {}
def model0(maker):
    "The same initial weights for every learner of `maker`"
    if maker not in MODELS: set_seed(0); MODELS[maker] = mlp() if maker == 'mlp' else small_cnn()
    return copy.deepcopy(MODELS[maker])

def learner(maker, opt_func, lr, wd, **kw):
    extra = dict(loss_func=mse) if maker == 'mlp' else dict(loss_func=CrossEntropyLossFlat(), splitter=lambda m: [list(m[0].parameters()), list(m[1].parameters())])
    return Learner(data(maker), model0(maker), opt_func=opt_func, lr=lr, wd=wd, wd_bn_bias=True, cbs=EpochShuffle(0), **extra, **kw)

def train(maker, opt_func, sched, lr, wd, freeze=True):
    learn = learner(maker, opt_func, lr, wd)
    fit = learn.fit_one_cycle if sched == 'one_cycle' else learn.fit
    with learn.no_bar(), learn.no_logging():
        if maker == 'cnn' and freeze:
            learn.freeze(); fit(1)
            learn.unfreeze(); fit(1, slice(lr/10, lr))
        else: fit(2)
    return learn

def moved(learn, maker): return not same_weights(learn.model, model0(maker))

@pytest.mark.parametrize('maker', ['mlp', 'cnn'])
@pytest.mark.parametrize('sched', ['fit', 'one_cycle'])
def test_muon_fits_match_torch(maker, sched):
    "rule_opt(muon_rule) against torch's Muon + AdamW in OptimWrapper: weight decay on both halves, mom scheduled, slices, freeze"
    kw = dict(adam_wd=0.01)
    ours = train(maker, rule_opt(muon_rule, **kw), sched, 0.02, 0.05)
    ref = train(maker, partial(OptimWrapper, opt=MuonAdamW, **kw), sched, 0.02, 0.05)
    assert same_weights(ours.model, ref.model), max_weight_diff(ours.model, ref.model)
    assert moved(ours, maker)

@pytest.mark.parametrize('maker', ['mlp', 'cnn'])
@pytest.mark.parametrize('sched', ['fit', 'one_cycle'])
def test_prodigy_fits_match_prodigyopt(maker, sched):
    "rule_opt(prodigy_rule) against Prodigy in OptimWrapper, lr=1, decoupled weight decay (no freeze: see the notebook)"
    ours = train(maker, rule_opt(prodigy_rule), sched, 1., 0.01, freeze=False)
    ref = train(maker, partial(OptimWrapper, opt=Prodigy), sched, 1., 0.01, freeze=False)
    assert same_weights(ours.model, ref.model), max_weight_diff(ours.model, ref.model)
    assert moved(ours, maker)
    d = next(s['d'] for s in ours.opt.state.values() if 'd' in s)
    assert d == ref.opt.param_groups[0]['d'] and d > 1e-6

def test_muon_false_sends_a_group_to_adamw():
    "`muon=False` (per group): AdamW on the matrices too, as torch's AdamW with the fallback's hypers at `lr*adam_lr_ratio`"
    lr = 0.02
    ours = train('mlp', rule_opt(muon_rule, muon=False), 'fit', lr, 0.)
    adamw = partial(torch.optim.AdamW, betas=(0.9, 0.95), eps=1e-10, weight_decay=0., foreach=False)
    ref = train('mlp', partial(OptimWrapper, opt=adamw), 'fit', lr*0.015, 0.)
    assert same_weights(ours.model, ref.model) and moved(ours, 'mlp')
    learn = learner('cnn', rule_opt(muon_rule, muon=[True, False]), lr, 0.) # the head's group: AdamW
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    conv_w,head_w = learn.model[0][0].weight,learn.model[1][5].weight
    assert 'exp_avg' in learn.opt.state[head_w] and 'momentum_buffer' not in learn.opt.state[head_w]
    assert 'exp_avg' in learn.opt.state[conv_w] # a kernel is 4-D: the fallback's in any group

# ---- resume

class StopAfter(Callback):
    def __init__(self, n): self.n = n
    def after_epoch(self):
        if self.epoch+1 == self.n: raise fastai.callback.core.CancelFitException()

@pytest.mark.parametrize('rule,lr', [(muon_rule, 0.02), (prodigy_rule, 1.)], ids=['muon', 'prodigy'])
def test_resume_is_bit_identical(rule, lr, tmp_path):
    "fit_one_cycle(3) in one go equals 1 epoch, save(with_opt), a fresh learner, load, go on from epoch 1"
    def mk(): return learner('mlp', rule_opt(rule), lr, 0.01, path=tmp_path)
    whole = mk()
    with whole.no_bar(), whole.no_logging(): whole.fit_one_cycle(3)
    a = mk()
    with a.no_bar(), a.no_logging(): a.fit_one_cycle(3, cbs=[StopAfter(1)])
    a.save('half', with_opt=True)
    b = mk(); b.load('half', with_opt=True)
    with b.no_bar(), b.no_logging(): b.fit_one_cycle(3, start_epoch=1)
    assert same_weights(whole.model, b.model) and not same_weights(whole.model, a.model)

# ---- bad input

def test_prodigy_refuses_two_learning_rates():
    "Prodigy has one step size: discriminative rates stop at the first step, weights untouched"
    learn = learner('cnn', rule_opt(prodigy_rule), 1., 0.)
    w0 = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.raises(RuleError, match=r"Prodigy takes one `lr` for every parameter group .* got \[0.1, 1.0\]"):
        with learn.no_bar(), learn.no_logging(): learn.fit(1, slice(0.1, 1.))
    assert all(torch.equal(p, p0) for p,p0 in zip(learn.model.parameters(), w0)) # the weights before the step

def test_muon_refuses_unknown_lr_adjustment():
    learn = learner('mlp', rule_opt(muon_rule, adjust_lr_fn='rms'), 0.02, 0.)
    w0 = [p.detach().clone() for p in learn.model.parameters()]
    with pytest.raises(RuleError, match=r"`adjust_lr_fn` must be 'original', 'match_rms_adamw' or 'spectral_unclamped', got 'rms'"):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert all(torch.equal(p, p0) for p,p0 in zip(learn.model.parameters(), w0)) # the weights before the step

def test_muon_without_a_matrix_says_so():
    "On a model with no 2-D weight Muon is all AdamW fallback: the comparison warns; with a matrix it does not"
    with pytest.warns(UserWarning, match="has none"): compare_optimizers(opt='muon', epochs=1)
    mlp = lambda dls: nn.Sequential(nn.Linear(dls.train.dataset.tensors[0].shape[1], 4), nn.ReLU(), nn.Linear(4, 1))
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='Muon orthogonalises')
        compare_optimizers(opt='muon', epochs=1, model_fn=mlp)
