"""A `whole_step` rule under several param groups with their own hyper-parameters (discriminative lrs, per-group
momentum): each parameter is stepped with its own group's values (`hypers[i]`), and the keywords get the first group's,
the optimizer-wide settings a torch optimizer reads from `param_groups[0]` (prodigyopt's betas)."""
import pytest, torch
from torch import nn
from fastai.basics import Learner, SGD, partial
from prodigyopt import Prodigy
from sgd_callbacks.all import *
from sgd_callbacks.optim.step import rule_opt, RuleOptimizer
from sgd_callbacks.scratch import mse

@whole_step
def whole_sgd(ps, gs, states, hypers, lr=0.1, mom=0.9):
    "SGD with momentum over every parameter at once, each with its own group's `lr` and `mom`"
    for p,g,s,h in zip(ps, gs, states, hypers):
        buf = s.get('buf')
        s['buf'] = buf = g.clone() if buf is None else buf.mul_(h['mom']).add_(g) # torch's SGD: the first buffer is the gradient
        p.add_(buf, alpha=-h['lr'])

@whole_step
def whole_sgd_noting(ps, gs, states, hypers, lr=0.1, mom=0.9, **_):
    "`whole_sgd`, noting the keywords it was given in the optimizer's own state"
    states[0]['kw'] = dict(lr=lr, mom=mom)
    whole_sgd(ps, gs, states, hypers, lr, mom)

def params(seed=0, shapes=((3, 4), (4,), (2, 3), (5,))):
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=g)) for s in shapes]

def step_both(ref, ours, ps, qs, steps=6, seed=1):
    "The same random gradients into both, `steps` times; every weight compared with `torch.equal`"
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p,q in zip(ps, qs): p.grad = torch.randn(p.shape, generator=g); q.grad = p.grad.clone()
        ref.step(); ours.step()
    return all(torch.equal(p, q) for p,q in zip(ps, qs)) and not all(torch.equal(p, q) for p,q in zip(ps, params()))

def test_each_group_stepped_with_its_own_hypers():
    "Two groups, their own lr and momentum: torch's SGD stepping each group with its own, bit for bit"
    ps,qs = params(),params()
    ref = torch.optim.SGD([dict(params=ps[:2], lr=0.1, momentum=0.9), dict(params=ps[2:], lr=0.01, momentum=0.5)])
    ours = RuleOptimizer([qs[:2], qs[2:]], rule=whole_sgd)
    ours.set_hyper('lr', [0.1, 0.01]); ours.set_hyper('mom', [0.9, 0.5])
    assert step_both(ref, ours, ps, qs)

def test_discriminative_lrs_in_a_learner():
    "`lr=slice(...)` in a `Learner`, through `rule_opt` and `ScratchStep`: fastai's SGD's steps with each group's lr; the keywords the first group's"
    from sgd_callbacks.data import linear_dls
    def model(): torch.manual_seed(0); return nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    def split(m): return [list(m[0].parameters()), list(m[1].parameters())]
    dls = linear_dls(bs=10)
    sgd = partial(SGD, mom=0.9, decouple_wd=False)
    def learner(opt, *cbs): return Learner(dls, model(), loss_func=mse, opt_func=opt, splitter=split, lr=slice(1e-3, 1e-1), wd=0.,
                                           cbs=[EpochShuffle(0), *cbs])
    ours,scratch,ref = learner(rule_opt(whole_sgd_noting)),learner(sgd, ScratchStep(rule=whole_sgd_noting)),learner(sgd)
    for l in (ours, scratch, ref):
        with l.no_bar(), l.no_logging(): l.fit(2)
    for l in (ours, scratch):
        assert [h['lr'] for h in l.opt.hypers] == [1e-3, 1e-1]
        assert all(torch.equal(p, q) for p,q in zip(l.model.parameters(), ref.model.parameters()))
        assert l.opt.state[next(l.model.parameters())]['kw'] == dict(lr=1e-3, mom=0.9)

def test_keywords_get_the_first_groups_values():
    "prodigyopt reads betas from `param_groups[0]`: two groups with other betas (and their own eps, decay) step as it does"
    ps,qs = params(),params()
    ref = Prodigy([dict(params=ps[:2], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.),
                   dict(params=ps[2:], betas=(0.5, 0.9), eps=1e-6, weight_decay=0.1)], lr=1.)
    ours = RuleOptimizer([qs[:2], qs[2:]], rule=prodigy_rule, lr=1.)
    for k,v in dict(mom=[0.9, 0.5], sqr_mom=[0.999, 0.9], eps=[1e-8, 1e-6], wd=[0., 0.1]).items(): ours.set_hyper(k, v)
    assert step_both(ref, ours, ps, qs, steps=10)
