"""Every hyper-parameter of the modern rules at a value other than its default, against the authors' code (or, where the
reference has no such knob, a hand computation); and each modern rule with fastai's default `wd_bn_bias=False` against
its reference given the same per-parameter decay (parameter groups with `weight_decay=0` for norm layers and biases)."""
import copy
import pytest, torch
from torch import nn
from fastai.basics import Learner, OptimWrapper, CrossEntropyLossFlat, partial, set_seed
from fastai.torch_core import norm_bias_params
import schedulefree
from sgd_callbacks.all import *
# private names, in one place, so that a module's move is one edit here
from sgd_callbacks.references import MODERN, Reference, modern_reference
from sgd_callbacks.optim.step import rule_hypers
from sgd_callbacks.optim.muon import MuonAdamW
from sgd_callbacks.vision import digits_data

# Schedule-Free SGD is no contender of `compare_optimizers`; its reference in the same harness
SF_SGD = Reference('schedulefree', 'SGDScheduleFree', schedulefree_sgd_rule, hp_map=None, fixed=dict(foreach=False),
                   kw=lambda hp: dict(momentum=hp['mom'], weight_decay=hp['wd'], warmup_steps=hp['warmup_steps'], r=hp['r'],
                                      weight_lr_power=hp['weight_lr_power']))

@pytest.fixture(autouse=True)
def sf_sgd(monkeypatch): monkeypatch.setitem(MODERN, 'sf_sgd', SF_SGD)

SF = ('schedulefree', 'sf_sgd')
LR = dict(lion=1e-2, schedulefree=1e-2, sf_sgd=1e-2, ademamix=1e-2, muon=0.02, prodigy=0.5) # Prodigy: not 1, where d·lr is d

# (optimizer, hypers every run of the case has, the non-default values): the run with both against the reference, bit
# for bit; and the run with both against the run with the first alone, which must differ (the value changes the weights)
CASES = [
    ('lion', {}, dict(mom=0.8)), ('lion', {}, dict(sqr_mom=0.9)), ('lion', {}, dict(wd=0.1)),
    ('schedulefree', {}, dict(mom=0.8)), ('schedulefree', {}, dict(sqr_mom=0.99)), ('schedulefree', {}, dict(eps=1e-2)),
    ('schedulefree', {}, dict(wd=0.1)), ('schedulefree', {}, dict(warmup_steps=3)), ('schedulefree', {}, dict(r=0.5)),
    ('schedulefree', dict(warmup_steps=3), dict(weight_lr_power=1.)),
    ('sf_sgd', {}, dict(mom=0.8)), ('sf_sgd', {}, dict(wd=0.1)), ('sf_sgd', {}, dict(warmup_steps=3)), ('sf_sgd', {}, dict(r=0.5)),
    ('sf_sgd', dict(warmup_steps=3), dict(weight_lr_power=1.)),
    ('ademamix', {}, dict(mom=0.8)), ('ademamix', {}, dict(sqr_mom=0.99)), ('ademamix', {}, dict(beta3=0.99)),
    ('ademamix', {}, dict(alpha=2.)), ('ademamix', {}, dict(t_alpha_beta3=4)), ('ademamix', {}, dict(eps=1e-2)),
    ('ademamix', {}, dict(wd=0.1)), ('ademamix', dict(wd=0.1), dict(decouple_wd=True)),
    ('muon', {}, dict(mom=0.8)), ('muon', {}, dict(wd=0.3)), ('muon', {}, dict(nesterov=False)), ('muon', {}, dict(ns_a=3.)),
    ('muon', {}, dict(ns_b=-4.5)), ('muon', {}, dict(ns_c=1.5)), ('muon', {}, dict(eps=50.)), ('muon', {}, dict(ns_steps=3)),
    ('muon', {}, dict(adjust_lr_fn='match_rms_adamw')), ('muon', {}, dict(adjust_lr_fn='spectral_unclamped')),
    ('muon', {}, dict(adam_lr_ratio=0.1)), ('muon', {}, dict(adam_mom=0.8)), ('muon', {}, dict(adam_sqr_mom=0.99)),
    ('muon', {}, dict(adam_eps=1e-2)), ('muon', {}, dict(adam_wd=0.1)),
    ('prodigy', {}, dict(mom=0.8)), ('prodigy', {}, dict(sqr_mom=0.99)), ('prodigy', {}, dict(beta3=0.9)),
    ('prodigy', {}, dict(eps=1e-2)), ('prodigy', {}, dict(wd=0.1)), ('prodigy', dict(wd=0.1), dict(decouple_wd=False)),
    ('prodigy', {}, dict(use_bias_correction=True)), ('prodigy', {}, dict(safeguard_warmup=True)), ('prodigy', {}, dict(d0=1e-4)),
    ('prodigy', {}, dict(d_coef=2.)), ('prodigy', {}, dict(growth_rate=1.02)), ('prodigy', {}, dict(slice_p=3)),
    ('prodigy', {}, dict(mom=0.)), # no first moment: the step along g, not the average
]
# hypers the reference cannot be told: `train_mode` (ScheduleFreeEval's switch), Muon's `muon` (tested by hand below)
NO_KNOB = {'lr', 'do_wd', 'train_mode', 'muon'}
SHAPES = [(5, 4), (4,), (3, 2, 2), (1,), (4, 6)] # a tall and a wide matrix: Muon's lr factors differ on them

def stepped(opt, hypers, steps=8, seed=0):
    "After `steps` noisy gradients of `|w - target|²/2` (so Prodigy's `d` grows): `(rule_opt(rule)'s weights, the reference's, both optimizers)`"
    g = torch.Generator().manual_seed(seed)
    w0,target = ([torch.randn(s, generator=g) for s in SHAPES] for _ in range(2))
    ours,theirs = ([nn.Parameter(w.clone()) for w in w0] for _ in range(2))
    extra = dict(train_mode=True) if opt in SF else {}                 # the weights y, as `ScheduleFreeEval` would put them
    o = rule_opt(MODERN[opt].rule, **hypers, **extra)([ours[:2], ours[2:]], lr=LR[opt])
    r = modern_reference(opt, **hypers)([theirs[:2], theirs[2:]], lr=LR[opt])
    if opt in SF: r.opt.train()
    for _ in range(steps):
        grads = [p.detach() - t + 0.1*torch.randn(t.shape, generator=g) for p,t in zip(ours, target)]
        for p,q,gr in zip(ours, theirs, grads): p.grad,q.grad = gr.clone(),gr.clone()
        o.step(); r.step()
    assert all(not torch.equal(p, w) for p,w in zip(ours, w0))        # every tensor moved
    return ours,theirs,o,r

def test_every_declared_hyper_is_tested():
    "A hyper-parameter a rule gains is a case here, or this fails"
    for opt in LR:
        tested = {k for o,base,h in CASES if o == opt for k in h}
        assert set(rule_hypers(MODERN[opt].rule)[0]) - NO_KNOB == tested, opt

@pytest.mark.parametrize('opt,base,hypers', CASES, ids=[f"{o}-{'-'.join(f'{k}={v}' for k,v in h.items())}" for o,_,h in CASES])
def test_a_non_default_hyper_matches_the_reference(opt, base, hypers):
    ours,theirs,o,r = stepped(opt, {**base, **hypers})
    for p,q in zip(ours, theirs): assert torch.equal(p, q), p.shape
    if opt == 'prodigy': assert next(s['d'] for s in o.state.values() if 'd' in s) == r.opt.param_groups[0]['d']
    default,*_ = stepped(opt, base)
    assert not all(map(torch.equal, ours, default))                    # the value changed the weights

@pytest.mark.parametrize('opt', sorted(LR))
def test_defaults_at_a_learning_rate_of_ones_own(opt):
    ours,theirs,o,r = stepped(opt, {})
    for p,q in zip(ours, theirs): assert torch.equal(p, q), p.shape

def test_muon_false_is_torch_adamw_with_the_fallbacks_own_hypers():
    "`muon=False` has no counterpart in the reference: by hand, torch's AdamW at `lr*adam_lr_ratio` with the `adam_*` hypers"
    h = dict(adam_lr_ratio=0.1, adam_mom=0.8, adam_sqr_mom=0.99, adam_eps=1e-3, adam_wd=0.1)
    g = torch.Generator().manual_seed(0)
    w0 = [torch.randn(s, generator=g) for s in SHAPES]
    ours,theirs = ([nn.Parameter(w.clone()) for w in w0] for _ in range(2))
    o = rule_opt(muon_rule, muon=False, **h)([ours], lr=0.02)
    r = torch.optim.AdamW(theirs, lr=0.02*0.1, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1, foreach=False)
    for _ in range(6):
        grads = [torch.randn(s, generator=g) for s in SHAPES]
        for p,q,gr in zip(ours, theirs, grads): p.grad,q.grad = gr.clone(),gr.clone()
        o.step(); r.step()
    for p,q,w in zip(ours, theirs, w0): assert torch.equal(p, q) and not torch.equal(p, w)

# ---- fastai's default wd_bn_bias=False: norm layers and biases not decayed

def cnn():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 10))
set_seed(0)
MODEL = cnn()
DATA = [t[:96] for t in digits_data(8)]

def decay_groups(m):
    "The reference's parameter groups: fastai's `norm_bias_params` with `weight_decay=0`, the rest at the optimizer's"
    nb = set(norm_bias_params(m, True))
    return [{'params': [p for p in m.parameters() if p not in nb]}, {'params': [p for p in m.parameters() if p in nb], 'weight_decay': 0.}]

def muon_groups(params, lr, **kw):
    "`MuonAdamW` takes one weight decay for every group: a group's own 0 given to both its halves"
    m = MuonAdamW(params, lr=lr, **kw)
    for i,g in enumerate(params):
        if g.get('weight_decay') == 0: m.param_groups[i]['weight_decay'] = m.adamw.param_groups[i]['weight_decay'] = 0.
    return m

WD = 0.05
WD_HYPERS = dict(muon=dict(adam_wd=WD)) # Muon's fallback decays with its own adam_wd
# each rule at its defaults, and the decay of the other kind where a rule has its own code for it (Prodigy's L2 into the
# gradient) or a default other than decoupled (AdEMAMix's L2)
WD_CASES = [(o, WD_HYPERS.get(o, {})) for o in sorted(LR)] + [('prodigy', dict(decouple_wd=False)), ('ademamix', dict(decouple_wd=True))]

def fitted(opt_func, lr, cbs, **kw):
    learn = Learner(tensor_dls(*DATA, bs=32), copy.deepcopy(MODEL), loss_func=CrossEntropyLossFlat(), opt_func=opt_func, lr=lr,
                    cbs=[EpochShuffle(), *cbs], **kw)
    with learn.no_bar(), learn.no_logging(): learn.fit(2)
    return learn

@pytest.mark.parametrize('opt,h', WD_CASES, ids=[o + ''.join(f'-{k}={v}' for k,v in h.items() if k != 'adam_wd') for o,h in WD_CASES])
def test_wd_bn_bias_false_matches_the_reference_with_per_group_decay(opt, h):
    r = MODERN[opt]
    cbs = lambda: [ScheduleFreeEval()] if opt in SF else []
    ours = fitted(rule_opt(r.rule, **h), LR[opt], cbs(), wd=WD)        # wd_bn_bias=False: fastai's default
    assert not ours.wd_bn_bias
    if opt == 'muon': ref = partial(OptimWrapper, opt=partial(muon_groups, **r.kw({**rule_hypers(r.rule)[0], **h, 'wd': WD})))
    else: ref = modern_reference(opt, **h, wd=WD)
    # wd=None: the groups' own weight decay stays; wd_bn_bias=True: nothing of fastai's in the reference's state
    theirs = fitted(ref, LR[opt], cbs(), splitter=decay_groups, wd_bn_bias=True)
    assert same_weights(ours.model, theirs.model), max_weight_diff(ours.model, theirs.model)
    assert not same_weights(ours.model, MODEL)
    everywhere = fitted(rule_opt(r.rule, **h), LR[opt], cbs(), wd=WD, wd_bn_bias=True)
    assert not same_weights(ours.model, everywhere.model)             # the biases' and norms' decay changes the weights
