"Each pitfall: two setups, and `explain_difference` names exactly the causes there, proven by the aligned runs"
import pytest, torch
from functools import partial
from torch import nn
from fastai.optimizer import SGD, Adam, RMSProp
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
    # fastai's SGD without momentum takes no momentum step (its `mom` does nothing): the other side's momentum is pinned to zero
    'momentum against none': (Setup(partial(SGD, mom=0.9), lr=0.1), Setup(SGD, lr=0.1), ['momentum']),
    'none against momentum': (Setup(SGD, lr=0.1), Setup(partial(SGD, mom=0.9), lr=0.1), ['momentum']),
    'torch momentum against fastai none': (Setup(partial(TSGD, momentum=0.9), lr=0.1), Setup(SGD, lr=0.1), ['momentum']),
    # fit_one_cycle schedules the `mom` that does nothing: once named `beta1_schedule`, then "unexplained"
    'one cycle without momentum against momentum': (Setup(SGD, lr=0.1, fit='fit_one_cycle'), Setup(partial(SGD, mom=0.9), lr=0.1),
                                                    ['lr_schedule', 'momentum']),
    'RMSProp without momentum against torch with': (Setup(partial(RMSProp, decouple_wd=False), lr=1e-2, wd=0.),
                                                    Setup(partial(torch.optim.RMSprop, momentum=0.9), lr=1e-2), ['momentum']),
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

# fastai's default MLP with BatchNorm: the model `tabular_learner` builds (TabularModel, layers [200, 100], BatchNorm on the
# inputs and after every hidden Linear), here with continuous inputs only; lin_first=False is LinBnDrop's own default order
from fastai.tabular.model import TabularModel
from sgd_callbacks.explain import rel_dist
class ContOnly(nn.Module):
    "A `TabularModel` fed continuous columns only (no categorical ones)"
    def __init__(self, lin_first=True):
        super().__init__(); torch.manual_seed(0); self.m = TabularModel([], 11, 1, layers=[200, 100], lin_first=lin_first)
    def forward(self, x): return self.m(x.new_zeros(len(x), 0).long(), x)

README_PAIR = (Setup(partial(TAdamW, weight_decay=0.01, foreach=False), lr=1e-3), Setup(Adam, lr=1e-3, wd=0.01))

@pytest.mark.parametrize('lin_first', [True, False])
def test_the_readme_pair_on_fastais_default_mlp_ends_bit_identical(lin_first):
    "Once 'unexplained' (lin_first=False: 0.00025 left): the order of operations proven by fastai's Adam stepped in torch's arithmetic"
    rep = explain_difference(*README_PAIR, diabetes_dls(bs=64, seed=0), ContOnly(lin_first))
    assert rep.names == ['beta2', 'eps', 'decayed_params', 'op_order'] and rep.explained, rep
    assert torch.equal(rep.swapped.ws, rep.aligned[0].ws) and rep.swapped_side == 'b' # b in a's arithmetic is a, bit for bit
    assert rep.bound == rep.causes[-1].before == rel_dist(*rep.aligned) > 0 # what is left before the swap: not the 0 after it
    assert rep.twin == 'rule_opt(torch_adam_rule)' and rep.summary().endswith('with them removed: bit-identical')

def test_op_order_proven_whatever_its_size():
    "Linear then BatchNorm: Adam scales each coordinate by its own gradient's size, so a rounding tipped at step 4 grows to 1e-3"
    def lin_bn(): torch.manual_seed(0); return nn.Sequential(nn.Linear(11, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
    rep = explain_difference(*README_PAIR, diabetes_dls(bs=64, seed=0), lin_bn())
    assert rep.names == ['beta2', 'eps', 'decayed_params', 'op_order'] and rep.explained, rep
    assert rep.bound > 1e-4 # above OP_ORDER_TOL: a's implementation swapped into b could not have called it rounding
    # the other way round: a (fastai's) is the side stepped in torch's arithmetic
    rev = explain_difference(README_PAIR[1], README_PAIR[0], diabetes_dls(bs=64, seed=0), lin_bn())
    assert rev.names == ['beta2', 'eps', 'decayed_params', 'op_order'] and rev.swapped_side == 'a', rev
    assert torch.equal(rev.swapped.ws, rev.aligned[1].ws) and rev.bound == rel_dist(*rev.aligned)

def test_a_cause_names_only_the_groups_it_touches(dls):
    "Two param groups, the lr differing in the second only: the cause names that group's tensors, not 'all'"
    def split(m): return [list(m[0].parameters()), list(m[2].parameters())]
    rep = explain_difference(Setup(SGD, lr=[0.1, 0.1], splitter=split), Setup(SGD, lr=[0.1, 0.05], splitter=split), dls, mlp())
    assert rep.names == ['lr'] and rep.explained, rep
    assert rep.causes[0].params == ['2.weight', '2.bias'] and (rep.causes[0].a, rep.causes[0].b) == (0.1, 0.05), rep # that group's values
    both = explain_difference(Setup(SGD, lr=[0.1, 0.1], splitter=split), Setup(SGD, lr=[0.05, 0.05], splitter=split), dls, mlp())
    assert both.causes[0].params == 'all', both

def test_more_bad_input_named():
    "Each argument a user can get wrong, named in the error before any training"
    dls = diabetes_dls(bs=128)
    m2 = mlp(); torch.nn.init.zeros_(m2[0].bias)
    with pytest.raises(ValueError, match='`model`: the two models start from different weights'): explain_difference(Setup(SGD), Setup(SGD), dls, (mlp(), m2))
    with pytest.raises(ValueError, match=r'`model` gives \(128, 2\) for targets'):
        explain_difference(Setup(SGD), Setup(SGD), dls, nn.Sequential(nn.Linear(11, 2)))
    with pytest.raises(TypeError, match='`dls` must be fastai DataLoaders'): explain_difference(Setup(SGD), Setup(SGD), [1, 2], mlp())
    with pytest.raises(TypeError, match='`a.sched` is a torch scheduler'):
        explain_difference(Setup(SGD, sched=lambda o: None), Setup(SGD), dls, mlp())
    with pytest.raises(TypeError, match='`sched` must be a callable'): Setup(SGD, sched=3)
    with pytest.raises(TypeError, match='`splitter` must be a callable'): Setup(SGD, splitter=[1])

def test_dls_as_a_callable_and_identical_runs():
    "`dls` may be a function returning them; identical runs say so, with the number of steps"
    rep = explain_difference(Setup(partial(TSGD, momentum=0.9), lr=0.05), Setup(partial(SGD, mom=0.9), lr=0.05),
                             lambda: diabetes_dls(bs=128), mlp())
    assert rep.identical and rep.causes == [] and rep.part is None
    assert rep.summary().endswith(f'identical: every weight after every one of {len(rep.ra.losses)} steps (torch.equal)')

def test_a_torch_partials_lr_is_the_learners():
    "Setup(partial(torch.optim.SGD, lr=0.05)) without `lr`: the partial's lr is the one trained with, as fastai's SGD at 0.05"
    rep = explain_difference(Setup(partial(TSGD, lr=0.05, momentum=0.9)), Setup(partial(SGD, mom=0.9), lr=0.05), diabetes_dls(bs=128), mlp())
    assert rep.identical and rep.ra.steps[0][0]['lr'] == 0.05, rep

# ---- what explain must not claim

def test_another_update_is_not_called_the_order_of_operations(dls):
    "torch's Adam with amsgrad against fastai's Adam: the rule in torch's arithmetic has no amsgrad, so no proof"
    a = Setup(partial(TAdam, amsgrad=True), lr=1e-2)
    rep = explain_difference(a, Setup(partial(Adam, sqr_mom=0.999, eps=1e-8, wd=0.), lr=1e-2), dls, mlp())
    assert rep.names == [] and not rep.explained and rep.summary().endswith('unexplained'), rep

def test_momentum_in_rmsprop_is_not_a_rounding():
    "torch's RMSprop divides each gradient before its momentum, fastai's the momentum: another update, not rounding"
    a = Setup(partial(torch.optim.RMSprop, momentum=0.9), lr=1e-3)
    b = Setup(partial(RMSProp, mom=0.9, decouple_wd=False), lr=1e-3, wd=0.)
    rep = explain_difference(a, b, diabetes_dls(bs=128), mlp())
    assert 'op_order' not in rep.names and not rep.explained, rep

def test_a_difference_that_changes_nothing_is_not_a_cause(dls):
    "The body's lr differs, but the body is frozen: removing it changes nothing, so it is not named; the decay is"
    from fastai.callback.core import Callback
    class FreezeBody(Callback):
        def before_fit(self): self.learn.freeze()
    def split(m): return [list(m[0].parameters()), list(m[2].parameters())]
    a = Setup(SGD, lr=[0.1, 0.1], wd=0.1, splitter=split, cbs=[FreezeBody()])
    rep = explain_difference(a, Setup(SGD, lr=[0.01, 0.1], wd=0.2, splitter=split, cbs=[FreezeBody()]), dls, mlp())
    assert rep.names == ['weight_decay'] and rep.explained, rep
    assert rep.ra.steps[0][0]['lr'] != rep.rb.steps[0][0]['lr'] # the lrs did differ
