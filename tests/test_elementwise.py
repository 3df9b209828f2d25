"""ADOPT (torch-adopt), MARS (pytorch-optimizer) and `cautious(rule)` (pytorch-optimizer's `cautious=True`) against
their references: each trained in a real `Learner` with `rule_opt(rule)` and with the reference in `OptimWrapper`, on
the same batches from the same weights, 54 steps, bit for bit on weights and on the state both keep; each hyper through
the declaration's reference; a mutated rule is caught; bad input."""
import copy, pickle, warnings
import pytest, torch
from torch import nn
from fastai.basics import Learner, OptimWrapper, partial, set_seed
import fastai.callback.schedule # noqa: F401 (fit_one_cycle)
import adopt, pytorch_optimizer
from pytorch_optimizer.base.optimizer import BaseOptimizer
from sgd_callbacks.all import *
from sgd_callbacks.scratch import mse
from sgd_callbacks.optim.step import rule_hypers
from sgd_callbacks.optim.fastai_rules import adam_rule, sgd_rule, decay
from sgd_callbacks.optim.modern import lion_rule, ademamix_rule, zeros_state
from sgd_callbacks.optim.elementwise import *

warnings.filterwarnings('ignore', message='`torch._utils.is_compiling` is deprecated') # torch-adopt's step
BETAS = {'weight_decay': 'wd', 'betas__0': 'mom', 'betas__1': 'sqr_mom', 'betas__2': 'beta3'} # theirs -> fastai's
STATE = {'grad_avg': 'exp_avg', 'sqr_avg': 'exp_avg_sq', 'slow_avg': 'exp_avg_slow', 'prev_grad': 'last_grad'}
SHIFTED = lambda s: (s-1)**0.25 # torch-adopt's clip in pytorch_optimizer's step count, which starts one later

def ref(cls, **kw): return partial(OptimWrapper, opt=partial(cls, foreach=False, **kw), hp_map=BETAS)

set_seed(0)
MODEL = nn.Sequential(nn.Linear(11, 8), nn.ReLU(), nn.Linear(8, 1)) # matrices (MARS) and biases (its AdamW)

def train(opt_func, lr, wd, sched='fit', epochs=9): # 6 batches an epoch: 54 steps
    learn = Learner(diabetes_dls(bs=64), copy.deepcopy(MODEL), loss_func=mse, opt_func=opt_func, lr=lr, wd=wd,
                    wd_bn_bias=True, cbs=EpochShuffle()) # the references decay every weight
    with learn.no_bar(), learn.no_logging(): (learn.fit_one_cycle if sched == 'one_cycle' else learn.fit)(epochs)
    return learn

def state_pairs(ours, theirs):
    "(our tensor, theirs) for each piece of state both keep, and the step counts where theirs is per tensor"
    sa = [ours.opt.state[p] for p in ours.model.parameters()]
    sb = [theirs.opt.opt.state[p] for p in theirs.model.parameters()]
    pairs = [(x[k], y[STATE[k]]) for x,y in zip(sa, sb) for k in x if STATE.get(k) in y]
    return pairs + [(torch.tensor(float(x['step'])), y['step']) for x,y in zip(sa, sb) if 'step' in x and 'step' in y]

def check(rule, reference, lr, wd, sched='fit', state=True):
    ours,theirs = train(rule_opt(rule), lr, wd, sched),train(reference, lr, wd, sched)
    assert ours.train_iter >= 50
    assert same_weights(ours.model, theirs.model), max_weight_diff(ours.model, theirs.model)
    assert not same_weights(ours.model, MODEL)                          # they moved
    assert ours.recorder.values == theirs.recorder.values
    if state:
        pairs = state_pairs(ours, theirs)
        assert pairs and all(torch.equal(a, b) for a,b in pairs)
    return ours,theirs

WDS = pytest.mark.parametrize('wd', [0., 0.01])

# ADOPT

@WDS
@pytest.mark.parametrize('decouple', [False, True])
@pytest.mark.parametrize('sched', ['fit', 'one_cycle'])
def test_adopt_matches_torch_adopt(wd, decouple, sched):
    check(partial(adopt_rule, decouple_wd=decouple), ref(adopt.ADOPT, decouple=decouple), 1e-2, wd, sched)

def test_adopt_without_clip_and_other_hypers():
    kw = dict(mom=0.8, sqr_mom=0.99, eps=1e-5)
    check(partial(adopt_rule, clip_lambda=None, **kw),
          ref(adopt.ADOPT, clip_lambda=None, betas=(0.8, 0.99), eps=1e-5), 1e-2, 0.01)

@WDS
def test_pytorch_optimizers_adopt_agrees_with_the_clip_shifted_and_l2_decay(wd):
    check(adopt_rule, ref(pytorch_optimizer.ADOPT, clip_lambda=SHIFTED), 1e-2, wd)

@pytest.mark.parametrize('kw', [dict(), dict(clip_lambda=SHIFTED, weight_decouple=True)], ids=['as_is', 'decoupled'])
def test_pytorch_optimizers_adopt_differs_by_its_clip_and_its_decoupled_decay(kw):
    dec = kw.get('weight_decouple', False)
    ours = train(rule_opt(adopt_rule, decouple_wd=dec), 1e-2, 0.01)
    theirs = train(ref(pytorch_optimizer.ADOPT, **kw), 1e-2, 0.01)
    assert not same_weights(ours.model, theirs.model)

# MARS

MARS = {'default': {}, 'optimize_1d': dict(optimize_1d=True), 'l2': dict(decouple_wd=False),
        'lr_1d_factor': dict(lr_1d_factor=0.5), 'hypers': dict(mom=0.9, sqr_mom=0.95, gamma=0.05, mom_1d=0.8, wd_1d=0.)}

@WDS
@pytest.mark.parametrize('name', sorted(MARS))
def test_mars_matches_pytorch_optimizer(name, wd):
    kw = MARS[name]
    theirs = ref(pytorch_optimizer.MARS, **mars_kw({**rule_hypers(mars_rule)[0], **kw}))
    check(partial(mars_rule, **kw), theirs, 3e-3, wd)

def test_mars_under_one_cycle():
    check(mars_rule, ref(pytorch_optimizer.MARS, **mars_kw(rule_hypers(mars_rule)[0])), 3e-3, 0.01, 'one_cycle')

def test_mars_clips_its_corrected_gradient():
    "A large gradient: `c` is cut to norm 1 (the reference's clip), and the kept gradient is the gradient"
    p,st = torch.zeros(3, 4),{}
    g = torch.full((3, 4), 10.)
    u,finish = mars_direction(p, g.clone(), st, 1e-3)
    assert torch.allclose(st['sqr_avg'].sum()/(1-0.99), torch.tensor(1.))  # v = (1-β₂)·c², |c| = 1
    finish(u)
    assert torch.equal(st['prev_grad'], g)

# Cautious

def test_caution_is_pytorch_optimizers_mask():
    torch.manual_seed(0)
    for shape in [(5,), (7, 3), (2, 3, 4)]:
        u,g = torch.randn(shape),torch.randn(shape)
        g.view(-1)[0] = 0.                      # a zero gradient: no agreement
        theirs = u.clone(); BaseOptimizer.apply_cautious(theirs, g)
        ours = caution(u, g)
        assert torch.equal(ours, theirs) and not torch.equal(ours, u)

@pytest.mark.parametrize('rule,lr', [(adam_rule, 1e-2), (lion_rule, 3e-4), (ademamix_rule, 1e-3)],
                         ids=['adam', 'lion', 'ademamix'])
def test_a_direction_is_the_rule_it_stands_for(rule, lr):
    a,b = train(rule_opt(directed(DIRECTIONS[rule])), lr, 0.01),train(rule_opt(rule), lr, 0.01)
    assert same_weights(a.model, b.model) and not same_weights(a.model, MODEL)
    sa,sb = a.opt.state.values(),b.opt.state.values()
    assert all(torch.equal(x[k], y[k]) for x,y in zip(sa, sb) for k in x if torch.is_tensor(x[k]))

CAUTIOUS = {'lion': (lion_rule, ref(pytorch_optimizer.Lion, cautious=True), 3e-4),
            'ademamix': (ademamix_rule, ref(pytorch_optimizer.AdEMAMix, cautious=True), 1e-3),
            'adopt': (adopt_rule, ref(pytorch_optimizer.ADOPT, cautious=True, clip_lambda=SHIFTED), 1e-2),
            'mars': (mars_rule, ref(pytorch_optimizer.MARS, cautious=True), 3e-3),
            'mars_1d': (partial(mars_rule, optimize_1d=True),
                        ref(pytorch_optimizer.MARS, cautious=True, optimize_1d=True), 3e-3)}

@WDS
@pytest.mark.parametrize('name', sorted(CAUTIOUS))
def test_cautious_matches_pytorch_optimizers_cautious(name, wd):
    rule,theirs,lr = CAUTIOUS[name]
    ours,_ = check(cautious(rule), theirs, lr, wd, state=name != 'lion') # Lion's average: a lerp there, mul+add here
    plain = train(rule_opt(rule), lr, wd)
    assert not same_weights(ours.model, plain.model)                  # the mask changed the steps

def test_cautious_lion_keeps_its_average_within_rounding():
    "pytorch_optimizer's Lion lerps its average where lion-pytorch (`lion_rule`) multiplies and adds: last bits differ"
    ours,theirs = check(cautious(lion_rule), CAUTIOUS['lion'][1], 3e-4, 0.01, state=False)
    d = max((a - b).abs().max().item() for a,b in state_pairs(ours, theirs))
    assert 0 < d < 1e-6

def test_cautious_adam_is_ademamix_without_its_slow_average_up_to_rounding():
    "No reference computes fastai's Adam cautiously; AdEMAMix(alpha=0) is Adam in other roundings: a tight bound"
    kw = dict(alpha=0., betas=(0.9, 0.99, 0.9999), eps=1e-5, weight_decouple=True, cautious=True)
    ours = train(rule_opt(cautious_adam_rule), 1e-2, 0.01)
    theirs = train(ref(pytorch_optimizer.AdEMAMix, **kw), 1e-2, 0.01)
    ps = zip(ours.model.parameters(), theirs.model.parameters())
    rel = max(((p-q).abs()/q.abs().clamp(min=1e-3)).max().item() for p,q in ps)
    assert rel < 1e-4
    assert not same_weights(ours.model, train(rule_opt(adam_rule), 1e-2, 0.01).model)

def test_cautious_keeps_the_rules_hypers_and_pickles():
    assert rule_hypers(cautious(lion_rule)) == rule_hypers(lion_rule)
    assert rule_hypers(cautious(partial(mars_rule, gamma=0.1)))[0]['gamma'] == 0.1
    assert pickle.loads(pickle.dumps(cautious_adam_rule)) is cautious_adam_rule
    assert pickle.loads(pickle.dumps(adopt_rule)) is adopt_rule

# mutations and bad input

def adopt_late_v(p, g, state, lr, mom=0.9, sqr_mom=0.9999, eps=1e-6, clip_lambda=adopt_clip, wd=0., do_wd=True,
                 decouple_wd=False):
    "ADOPT with v updated before the step reads it: Adam's order, the slip ADOPT exists to avoid"
    if not decouple_wd: decay(p, g, lr, wd, do_wd, decouple_wd=False)
    k = state.get('step', 0); state['step'] = k+1
    v = zeros_state(state, 'sqr_avg', p)
    if k == 0: v.addcmul_(g, g); return None,None
    v.mul_(sqr_mom).addcmul_(g, g, value=1-sqr_mom)
    n = g.div(v.sqrt().clamp_(min=eps)).clamp_(-clip_lambda(k), clip_lambda(k))
    return zeros_state(state, 'grad_avg', p).lerp_(n, 1-mom),partial(p.add_, alpha=-lr)

def test_a_mutated_rule_is_caught():
    with pytest.raises(AssertionError): check(directed(adopt_late_v), ref(adopt.ADOPT), 1e-2, 0.01)
    with pytest.raises(AssertionError): check(partial(adopt_rule, clip_lambda=SHIFTED), ref(adopt.ADOPT), 1e-2, 0.01)

def test_bad_input_is_refused_by_name():
    with pytest.raises(TypeError, match='`rule`.*sgd_rule.*no direction'): cautious(sgd_rule)
    with pytest.raises(TypeError, match='`clip_lambda`'):
        adopt_rule(torch.zeros(2), torch.ones(2), {}, 1e-3, clip_lambda=0.5)
    with pytest.raises(TypeError, match='gamma'): rule_opt(adopt_rule, gamma=0.1)

# each hyper-parameter through the declaration's reference (what `sgd_compare --opt NAME --hp k=v` runs)

HYPER_CASES = [('adopt', {}, dict(mom=0.8)), ('adopt', {}, dict(sqr_mom=0.99)), ('adopt', {}, dict(eps=5.)),
               ('adopt', {}, dict(clip_lambda=None)), ('adopt', {}, dict(wd=0.1)),
               ('adopt', dict(wd=0.1), dict(decouple_wd=True)),
               ('mars', {}, dict(mom=0.9)), ('mars', {}, dict(sqr_mom=0.9)), ('mars', {}, dict(gamma=0.1)),
               ('mars', {}, dict(eps=1e-2)), ('mars', {}, dict(wd=0.1)),
               ('mars', dict(wd=0.1), dict(decouple_wd=False)), ('mars', {}, dict(optimize_1d=True)),
               ('mars', {}, dict(lr_1d_factor=0.3)), ('mars', {}, dict(mom_1d=0.8)),
               ('mars', {}, dict(sqr_mom_1d=0.9)), ('mars', {}, dict(wd_1d=0.)),
               ('cautious_lion', {}, dict(mom=0.8)), ('cautious_lion', {}, dict(sqr_mom=0.9)),
               ('cautious_lion', {}, dict(wd=0.1))]
SHAPES = [(5, 4), (4,), (3, 2, 2), (1,), (4, 6)]

def stepped(opt, hypers, steps=8, lr=1e-2):
    "Weights after `steps` noisy gradients of `|w - target|²/2`, with the declared rule and with the declared reference"
    from sgd_callbacks.references import modern_reference
    g = torch.Generator().manual_seed(0)
    w0,target = ([torch.randn(s, generator=g) for s in SHAPES] for _ in range(2))
    ours,theirs = ([nn.Parameter(w.clone()) for w in w0] for _ in range(2))
    o = DECLARATIONS[opt].opt_func(**hypers)([ours[:2], ours[2:]], lr=lr)
    r = modern_reference(opt, **hypers)([theirs[:2], theirs[2:]], lr=lr)
    for _ in range(steps):
        grads = [p.detach() - t + 0.1*torch.randn(t.shape, generator=g) for p,t in zip(ours, target)]
        for p,q,gr in zip(ours, theirs, grads): p.grad,q.grad = gr.clone(),gr.clone()
        o.step(); r.step()
    assert all(not torch.equal(p, w) for p,w in zip(ours, w0))
    return ours,theirs

def test_every_declared_hyper_is_tested():
    for opt in ('adopt', 'mars', 'cautious_lion'):
        tested = {k for o,_,h in HYPER_CASES if o == opt for k in h}
        assert set(DECLARATIONS[opt].hypers()) == tested, opt

@pytest.mark.parametrize('opt,base,hypers', HYPER_CASES,
                         ids=[f"{o}-{'-'.join(f'{k}={v}' for k,v in h.items())}" for o,_,h in HYPER_CASES])
def test_a_non_default_hyper_matches_the_declared_reference(opt, base, hypers):
    ours,theirs = stepped(opt, {**base, **hypers})
    assert all(torch.equal(p, q) for p,q in zip(ours, theirs))
    assert not all(torch.equal(p, q) for p,q in zip(ours, stepped(opt, base)[0])) # the value changes the weights
