"Each pitfall: two setups, and `explain_difference` names exactly the causes there, proven by the aligned runs"
import pytest, torch
from functools import partial
from torch import nn
from fastai.optimizer import SGD, Adam
from torch.optim.lr_scheduler import OneCycleLR
from sgd_callbacks.data import diabetes_dls, LinearModel
from sgd_callbacks.explain import Setup, explain_difference

@pytest.fixture(scope='module')
def dls(): return diabetes_dls(bs=128)

def mlp(): torch.manual_seed(0); return nn.Sequential(nn.Linear(11, 4), nn.ReLU(), nn.Linear(4, 1))
TAdamW,TAdam,TSGD = torch.optim.AdamW,torch.optim.Adam,torch.optim.SGD

PITFALLS = {
    'adam defaults': (Setup(TAdam, lr=1e-2), Setup(partial(Adam, wd=0.), lr=1e-2), ['beta2', 'eps', 'op_order']),
    'fastai Adam wd=0.01 by default': (Setup(partial(Adam, sqr_mom=0.999, eps=1e-8), lr=1e-2), Setup(Adam, lr=1e-2), []),
    'adamw recipe': (Setup(partial(TAdamW, weight_decay=0.1), lr=1e-2), Setup(Adam, lr=1e-2, wd=0.1),
                     ['beta2', 'eps', 'decayed_params', 'op_order']),
    'decay form': (Setup(Adam, lr=1e-2, wd=0.1), Setup(partial(Adam, decouple_wd=False), lr=1e-2, wd=0.1), ['decay_form']),
    'wd_bn_bias': (Setup(Adam, lr=1e-2, wd=0.1), Setup(Adam, lr=1e-2, wd=0.1, wd_bn_bias=True), ['decayed_params']),
    'one cycle moms': (Setup(Adam, lr=1e-2, fit='fit_one_cycle'), Setup(Adam, lr=1e-2, fit='fit_one_cycle', moms=(0.9, 0.9, 0.9)),
                       ['beta1_schedule']),
    'one cycle lr': (Setup(SGD, lr=0.1), Setup(SGD, lr=0.1, fit='fit_one_cycle'), ['lr_schedule']), # SGD's mom: scheduled, no effect
    'mom without momentum': (Setup(SGD, lr=0.1, wd=0.1, fit='fit_one_cycle'), # SGD without momentum: its scheduled mom changes nothing
                             Setup(SGD, lr=0.1, wd=0.2, fit='fit_one_cycle', moms=(0.9, 0.8, 0.9)), ['weight_decay']),
    'lr': (Setup(SGD, lr=0.1), Setup(SGD, lr=0.05), ['lr']),
    'beta1': (Setup(Adam, lr=1e-2), Setup(partial(Adam, mom=0.8), lr=1e-2), ['beta1']),
    'nesterov': (Setup(partial(TSGD, momentum=0.9), lr=0.05), Setup(partial(TSGD, momentum=0.9, nesterov=True), lr=0.05), ['nesterov']),
    'dampening': (Setup(partial(TSGD, momentum=0.9, dampening=0.5), lr=0.05), Setup(partial(SGD, mom=0.9), lr=0.05), ['dampening']),
    'torch vs fastai SGD': (Setup(partial(TSGD, momentum=0.9), lr=0.05), Setup(partial(SGD, mom=0.9), lr=0.05), []),
    # fastai's SGD without momentum has no `mom` to pin: a's momentum is pinned to b's zero
    'momentum against none': (Setup(partial(SGD, mom=0.9), lr=0.1), Setup(SGD, lr=0.1), ['beta1']),
    'none against momentum': (Setup(SGD, lr=0.1), Setup(partial(SGD, mom=0.9), lr=0.1), ['beta1']),
    'torch momentum against fastai none': (Setup(partial(TSGD, momentum=0.9), lr=0.1), Setup(SGD, lr=0.1), ['beta1']),
}
PITFALLS['fastai Adam wd=0.01 by default'] = (Setup(partial(Adam, wd=0.), lr=1e-2), Setup(Adam, lr=1e-2), ['weight_decay'])

@pytest.mark.parametrize('name', PITFALLS)
def test_names_exactly_the_causes(dls, name):
    a,b,want = PITFALLS[name]
    rep = explain_difference(a, b, dls, mlp())
    assert rep.names == want, rep
    assert rep.identical == (not want)
    assert rep.explained                               # removing them: bit-identical, or a's implementation in b is
    for c in rep.causes: assert c.before > c.after     # each proven: removing it brought the runs closer
    assert all(c.name != 'op_order' or 0 < c.before < 1e-5 for c in rep.causes)
    assert 'causes' in repr(rep) or rep.identical

def test_the_torch_recipe_with_one_cycle(dls):
    n = 2*len(dls.train)
    a = Setup(partial(TAdamW, weight_decay=0.1), lr=1e-2, sched=partial(OneCycleLR, max_lr=1e-2, total_steps=n))
    rep = explain_difference(a, Setup(Adam, lr=1e-2, wd=0.1, fit='fit_one_cycle'), dls, mlp())
    assert rep.names == ['lr_schedule', 'beta1_schedule', 'beta2', 'eps', 'decayed_params', 'op_order'] and rep.explained
    assert len(rep.causes[0].a) == n # a schedule: its values at every step

def test_bad_input_named_before_training(dls):
    with pytest.raises(TypeError, match='`a.opt`'): explain_difference(Setup(len), Setup(SGD), dls, mlp())
    with pytest.raises(TypeError, match='`b`'): explain_difference(Setup(SGD), SGD, dls, mlp())
    with pytest.raises(TypeError, match='LBFGS'): explain_difference(Setup(torch.optim.LBFGS), Setup(SGD), dls, mlp())
    with pytest.raises(ValueError, match='`model`'): explain_difference(Setup(SGD), Setup(SGD), dls, LinearModel(2))
    with pytest.raises(ValueError, match='`model`.*differ'):
        explain_difference(Setup(SGD), Setup(SGD), dls, (mlp(), nn.Sequential(nn.Linear(11, 3), nn.ReLU(), nn.Linear(3, 1))))
    with pytest.raises(ValueError, match='another algorithm'): explain_difference(Setup(SGD), Setup(Adam), dls, mlp())
