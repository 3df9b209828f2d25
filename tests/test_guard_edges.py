"""The guard of `rule_opt` and `ScratchStep` on models of several parameters in two groups: a rule that breaks a later
parameter (named, every weight and state put back), the first-step check of the package's rules, a gradient that is
already non-finite, `**kwargs` rules that read `do_wd`, and `whole_step` rules with per-group hyper-parameters."""
import copy
import pytest, torch
from torch import nn
from fastai.basics import Learner, Callback, SGD, partial, set_seed
from sgd_callbacks.all import *
# private names, in one place
from sgd_callbacks.scratch import mse

def mlp(): return nn.Sequential(nn.Linear(11, 4), nn.ReLU(), nn.Linear(4, 1), nn.Flatten(0))
def two_groups(m): return [list(m[0].parameters()), list(m[2].parameters())]
set_seed(0)
MODEL = mlp()

class Snap(Callback):
    "The weights and optimizer state after each step that went through"
    order = 100
    def after_step(self):
        self.w = copy.deepcopy(self.learn.model.state_dict())
        self.st = {n: copy.deepcopy(self.learn.opt.state[p]) for n,p in self.learn.model.named_parameters()}

def learner(opt_func, cbs=(), lr=1e-2, **kw):
    return Learner(diabetes_dls(bs=64), copy.deepcopy(MODEL), loss_func=mse, opt_func=opt_func, lr=lr, splitter=two_groups,
                   cbs=[EpochShuffle(), *cbs], **kw)

def fit(learn, *args):
    with learn.no_bar(), learn.no_logging(): learn.fit(*args)
    return learn

def breaks_last(how):
    "Plain SGD that, at its third step, breaks only the model's last parameter (`2.bias`, one element)"
    def rule(p, g, state, lr, **_):
        state['n'] = state.get('n', 0) + 1
        if state['n'] < 3 or p.numel() != 1: return p.add_(g, alpha=-lr)
        if how == 'raise': raise ValueError('my bug')
        if how == 'shape': p.data = torch.zeros(2)
        if how == 'nan': p.fill_(float('nan'))
    rule.__name__ = f'breaks_{how}'
    return rule

HOW = [('raise', 'raised ValueError: my bug'), ('shape', r'changed it from \(1,\) torch.float32 to \(2,\)'), ('nan', 'left non-finite values')]

def put_back(learn, snap):
    "Every weight and every parameter's state are those of the last good step, the ones stepped before the broken one too"
    assert all(torch.equal(v, snap.w[k]) for k,v in learn.model.state_dict().items())
    for n,p in learn.model.named_parameters(): assert learn.opt.state[p]['n'] == snap.st[n]['n'] == 2, n

@pytest.mark.parametrize('how,msg', HOW, ids=[h for h,_ in HOW])
def test_rule_opt_names_a_later_parameter_and_puts_every_weight_back(how, msg):
    snap = Snap(); learn = learner(rule_opt(breaks_last(how)), [snap])
    with pytest.raises(RuleError, match=rf"rule `breaks_{how}` {msg}.* on parameter `1 of group 1, shape \(1,\)` at step 3;"):
        fit(learn, 1)
    put_back(learn, snap)

@pytest.mark.parametrize('how,msg', HOW, ids=[h for h,_ in HOW])
def test_scratch_step_names_a_later_parameter_and_puts_every_weight_back(how, msg):
    snap = Snap(); learn = learner(SGD, [ScratchStep(rule=breaks_last(how)), snap])
    with pytest.raises(RuleError, match=rf"rule `breaks_{how}` {msg}.* on parameter `2.bias` at epoch 1, batch 3;"):
        fit(learn, 1)
    put_back(learn, snap)

@whole_step
def whole_breaks_last(ps, gs, states, hypers, lr):
    "A whole-step SGD that leaves the last parameter NaN at its second step"
    for p,g,h in zip(ps, gs, hypers): p.add_(g, alpha=-h['lr'])
    states[0]['n'] = states[0].get('n', 0) + 1
    if states[0]['n'] == 2: ps[-1].fill_(float('nan'))

def test_a_whole_step_rule_that_breaks_a_later_parameter():
    learn = learner(rule_opt(whole_breaks_last))
    w0 = None
    class First(Callback):
        order = 100
        def after_step(self): nonlocal w0; w0 = w0 or copy.deepcopy(self.learn.model.state_dict())
    learn.add_cb(First())
    with pytest.raises(RuleError, match=r"rule `whole_breaks_last` left non-finite values in it on parameter `1 of group 1, shape \(1,\)` at step 2"):
        fit(learn, 1)
    assert all(torch.equal(v, w0[k]) for k,v in learn.model.state_dict().items())

def params():
    g = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(s, generator=g)) for s in [(3, 2), (2,), (2, 2), (3,)]]

@pytest.mark.parametrize('guard', [None, False])
def test_the_first_step_of_a_package_rule_is_checked_on_every_parameter(guard):
    "Lion with an infinite lr on the second group only: stopped at its first step, even unguarded, the first group put back too"
    ps = params(); w0 = [p.detach().clone() for p in ps]
    opt = rule_opt(lion_rule, guard=guard)([ps[:2], ps[2:]], lr=0.1)
    opt.set_hyper('lr', [0.1, float('inf')])
    for p in ps: p.grad = torch.ones_like(p)
    with pytest.raises(RuleError, match=r"rule `lion_rule` left non-finite values in it on parameter `0 of group 1, shape \(2, 2\)` at step 1"):
        opt.step()
    assert all(map(torch.equal, ps, w0)) and all(len(opt.state[p]) == 0 for p in ps)
    opt.set_hyper('lr', 0.1); opt.step()                  # a good step goes through
    assert all(not torch.equal(p, w) for p,w in zip(ps, w0))

def plain(p, g, state, lr): p.add_(g, alpha=-lr)

def test_a_non_finite_gradient_reaching_a_plain_rule_goes_through():
    "Divergence is not the rule's fault: the NaN of the gradient reaches the weight, as in fastai's optimizers, and the rest steps"
    ps = params(); w0 = [p.detach().clone() for p in ps]
    opt = rule_opt(plain)([ps[:2], ps[2:]], lr=0.1)
    assert opt.guard                                       # one's own rule: checked every step
    for p in ps: p.grad = torch.ones_like(p)
    ps[3].grad[1] = float('nan')
    opt.step()
    assert torch.isnan(ps[3][1]) and torch.equal(ps[3][[0, 2]], w0[3][[0, 2]] - 0.1)
    for p,w in zip(ps[:3], w0[:3]): assert torch.equal(p, w - 0.1)

def kw_sgd(p, g, state, lr, wd=0., **kw):
    "SGD with decoupled weight decay, reading `do_wd` from its `**kwargs`"
    if kw['do_wd'] and wd != 0: p.mul_(1 - lr*wd)
    p.add_(g, alpha=-lr)

@pytest.mark.parametrize('how', ['rule_opt', 'ScratchStep'])
def test_a_kwargs_rule_reads_do_wd(how):
    "fastai's default `wd_bn_bias=False` reaches a rule that takes `**kwargs`: bit for bit fastai's SGD, biases not decayed"
    ours = lambda **kw: fit(learner(rule_opt(kw_sgd), wd=0.1, **kw) if how == 'rule_opt' else
                            learner(SGD, [ScratchStep(rule=kw_sgd)], wd=0.1, **kw), 2)
    ref = fit(learner(SGD, wd=0.1), 2)
    mine = ours()
    assert same_weights(mine.model, ref.model) and not same_weights(mine.model, MODEL)
    assert not same_weights(mine.model, ours(wd_bn_bias=True).model)  # decaying the biases would show

SEEN = []
@whole_step
def whole_sgd(ps, gs, states, hypers, lr, wd=0.):
    "SGD over every parameter at once, each with its group's `lr` and `wd` and its own `do_wd`"
    SEEN.append(lr)
    for p,g,h in zip(ps, gs, hypers):
        if h['do_wd'] and h['wd'] != 0: p.mul_(1 - h['lr']*h['wd'])
        p.add_(g, alpha=-h['lr'])

@whole_step
def whole_sgd_any(ps, gs, states, hypers, lr, wd=0., **_): return whole_sgd(ps, gs, states, hypers, lr, wd)

@pytest.mark.parametrize('how', ['rule_opt', 'ScratchStep'])
def test_a_whole_step_rule_gets_each_groups_hypers(how):
    "Discriminative learning rates (`slice`) and fastai's `do_wd`: fastai's SGD bit for bit; the keywords are the first group's"
    SEEN.clear()
    mk = lambda: learner(rule_opt(whole_sgd), wd=0.1) if how == 'rule_opt' else learner(SGD, [ScratchStep(rule=whole_sgd_any)], wd=0.1)
    mine,ref = fit(mk(), 2, slice(1e-3, 1e-2)),fit(learner(SGD, wd=0.1), 2, slice(1e-3, 1e-2))
    assert [h['lr'] for h in ref.opt.hypers] == [1e-3, 1e-2]
    assert same_weights(mine.model, ref.model) and not same_weights(mine.model, MODEL)
    assert not same_weights(mine.model, fit(learner(SGD, wd=0.1), 2, 1e-2).model)  # the slice shows in the weights
    assert len(SEEN) > 0 and set(SEEN) == {1e-3}
