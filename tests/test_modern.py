"""The modern rules against their authors' code: Lion (lion-pytorch), Schedule-Free AdamW and SGD (schedulefree), AdEMAMix
(pytorch-optimizer), each trained in a real `Learner` with `rule_opt(rule)` and with the reference in `OptimWrapper`, on the
same batches from the same weights, bit for bit; resume; ScheduleFreeEval; bad input."""
import copy
import pytest, torch
from torch import nn
from fastai.basics import Learner, OptimWrapper, Callback, CrossEntropyLossFlat, partial, set_seed
from fastai.learner import load_learner
import fastai.callback.schedule, fastai.callback.core
import lion_pytorch, schedulefree, pytorch_optimizer
from sgd_callbacks.all import *
from sgd_callbacks.scratch import mse
from sgd_callbacks.optim.fastai_rules import decay, moving_avg
from sgd_callbacks.references import modern_reference
from sgd_callbacks import compare
from sgd_callbacks.vision import digits_data

AMIX_MAP = {'weight_decay': 'wd', 'betas__0': 'mom', 'betas__1': 'sqr_mom', 'betas__2': 'beta3'} # fastai's map calls `alpha` sqr_mom
def wrap(opt, hp_map=None, **kw): return partial(OptimWrapper, opt=partial(opt, **kw), hp_map=hp_map)

# name: (rule, the reference's opt_func, lr, whether the reference keeps a count per group: that survives fastai's
# `clear_state`, which `freeze`/`unfreeze` call, where the rule's count, like fastai's optimizers', starts again)
RULES = {
    'lion':        (lion_rule, wrap(lion_pytorch.Lion), 3e-4, False),
    'sf_adamw':    (schedulefree_adamw_rule, wrap(schedulefree.AdamWScheduleFree, foreach=False), 3e-3, True),
    'sf_adamw_wu': (partial(schedulefree_adamw_rule, warmup_steps=5, r=0.5, weight_lr_power=1.),
                    wrap(schedulefree.AdamWScheduleFree, foreach=False, warmup_steps=5, r=0.5, weight_lr_power=1.), 3e-3, True),
    'sf_sgd':      (schedulefree_sgd_rule, wrap(schedulefree.SGDScheduleFree, foreach=False), 1e-2, True),
    'ademamix':    (ademamix_rule, wrap(pytorch_optimizer.AdEMAMix, AMIX_MAP, foreach=False), 1e-3, True),
    'ademamix_fe': (ademamix_rule, wrap(pytorch_optimizer.AdEMAMix, AMIX_MAP), 1e-3, True),         # its foreach path
    'ademamix_wu': (partial(ademamix_rule, t_alpha_beta3=10, decouple_wd=True),
                    wrap(pytorch_optimizer.AdEMAMix, AMIX_MAP, t_alpha_beta3=10, weight_decouple=True, foreach=False), 1e-3, True),
}

def cbs_for(rule): return [ScheduleFreeEval()] if 'schedulefree' in getattr(getattr(rule, 'func', rule), '__name__', '') else []

def mlp(): return nn.Sequential(nn.Linear(11, 8), nn.ReLU(), nn.Linear(8, 1))
def small_cnn():
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
                         nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                         nn.Linear(8, 10))
def groups(m): return [list(m[0].parameters()), list(m[1].parameters()), list(m[2].parameters())]

set_seed(0)
MODELS = {'mlp': mlp(), 'cnn': small_cnn()}   # every learner starts from a copy of these weights
DATA = {'mlp': lambda: dict(dls=diabetes_dls(bs=64), loss_func=mse),
        'cnn': lambda: dict(dls=tensor_dls(*(t[:160] for t in digits_data(8)), bs=32), loss_func=CrossEntropyLossFlat(), splitter=groups)}

def learner(kind, opt_func, lr, cbs=(), **kw):
    return Learner(model=copy.deepcopy(MODELS[kind]), opt_func=opt_func, lr=lr, wd=0.01, wd_bn_bias=True, # the references decay every weight
                   cbs=[EpochShuffle(), *cbs], **DATA[kind](), **kw)

def train(kind, opt_func, lr, sched, freeze, cbs=()):
    learn = learner(kind, opt_func, lr, cbs)
    fit = learn.fit_one_cycle if sched == 'one_cycle' else learn.fit
    with learn.no_bar(), learn.no_logging():
        if kind == 'cnn':
            if freeze: learn.freeze()
            fit(1)
            if freeze: learn.unfreeze()
            fit(1, slice(lr/10, lr))                     # discriminative learning rates, per group
        else: fit(2)
    return learn

@pytest.mark.parametrize('sched', ['fit', 'one_cycle'])
@pytest.mark.parametrize('kind', ['mlp', 'cnn'])
@pytest.mark.parametrize('name', sorted(RULES))
def test_rule_matches_its_reference(name, kind, sched):
    "`rule_opt(rule)` and the reference: the same weights, bit for bit, and they moved (freeze too, where the reference counts per tensor)"
    rule,ref,lr,per_group = RULES[name]
    cbs = cbs_for(rule)
    ours,theirs = (train(kind, f, lr, sched, freeze=not per_group, cbs=cbs) for f in (rule_opt(rule), ref))
    assert isinstance(ours.opt, RuleOptimizer)
    assert same_weights(ours.model, theirs.model), max_weight_diff(ours.model, theirs.model)
    assert not same_weights(ours.model, MODELS[kind])
    assert ours.recorder.values == theirs.recorder.values     # validated on the same weights

def lion_late(p, g, state, lr, mom=0.9, sqr_mom=0.99, wd=0., do_wd=True):
    "Lion with its average moved before the step that should read the old one: a slip in the order"
    decay(p, g, lr, wd, do_wd)
    p.add_(moving_avg(state, 'grad_avg', g, sqr_mom).mul(mom).add_(g, alpha=1-mom).sign_(), alpha=-lr)

def noop(p, g, state, lr, mom=0.9, sqr_mom=0.99, wd=0., do_wd=True): pass

def test_a_mutated_rule_is_caught():
    "The parity test can fail: AdEMAMix's β₂ off by one float32 ulp, Lion's steps in the wrong order, a step that does nothing"
    _,ref,lr,_ = RULES['ademamix']
    off = partial(ademamix_rule, sqr_mom=torch.nextafter(torch.tensor(0.999), torch.tensor(1.)).item())
    assert not same_weights(train('mlp', rule_opt(off), lr, 'fit', False).model, train('mlp', ref, lr, 'fit', False).model)
    _,ref,lr,_ = RULES['lion']
    assert not same_weights(train('mlp', rule_opt(lion_late), lr, 'fit', False).model, train('mlp', ref, lr, 'fit', False).model)
    assert same_weights(train('mlp', rule_opt(noop), lr, 'fit', False).model, MODELS['mlp'])   # caught by "the weights moved"

class StopAfter(Callback):
    def __init__(self, n): self.n = n
    def after_epoch(self):
        if self.epoch+1 == self.n: raise fastai.callback.core.CancelFitException()

@pytest.mark.parametrize('name', ['lion', 'sf_adamw', 'sf_sgd', 'ademamix_wu'])
def test_resume_is_bit_identical(name, tmp_path):
    "Save with the optimizer after one epoch, load into a fresh learner, go on: the weights of a straight run"
    rule,_,lr,_ = RULES[name]
    mk = lambda: learner('cnn', rule_opt(rule), lr, cbs_for(rule), path=tmp_path)
    straight = mk()
    with straight.no_bar(), straight.no_logging(): straight.fit_one_cycle(3)
    first = mk()
    with first.no_bar(), first.no_logging(): first.fit_one_cycle(3, cbs=StopAfter(1))
    first.save('one', with_opt=True)
    fresh = mk(); fresh.load('one', with_opt=True)
    with fresh.no_bar(), fresh.no_logging(): fresh.fit_one_cycle(3, start_epoch=1)
    assert same_weights(fresh.model, straight.model) and not same_weights(fresh.model, first.model)

# ---- Schedule-Free: training sees y, everything else sees x

class Seen(Callback):
    "The first weight of the model as each training batch and each validation saw it"
    order = 50
    def before_fit(self): self.trained,self.validated = [],[]
    def before_batch(self): (self.trained if self.training else self.validated).append(self.learn.model[0].weight.detach().clone())

def test_schedulefree_trains_y_and_validates_saves_exports_x(tmp_path):
    rule,ref,lr,_ = RULES['sf_adamw']
    ours,theirs = (learner('mlp', f, lr, [ScheduleFreeEval(), Seen()], path=tmp_path) for f in (rule_opt(rule), ref))
    for l in (ours, theirs):
        with l.no_bar(), l.no_logging(): l.fit(2)
    so,st = ours.cbs.filter(lambda c: isinstance(c, Seen))[0],theirs.cbs.filter(lambda c: isinstance(c, Seen))[0]
    assert all(map(torch.equal, so.trained, st.trained)) and all(map(torch.equal, so.validated, st.validated)) and len(so.validated) > 0
    ro = theirs.opt.opt
    ro.train(); y = theirs.model[0].weight.detach().clone(); ro.eval()               # the reference's y and x now
    x = theirs.model[0].weight.detach()
    assert not torch.equal(x, y) and torch.equal(ours.model[0].weight, x)           # after fit: x
    assert torch.equal(so.validated[-1], x)                                          # the last validation saw x
    ours.save('m', with_opt=False); back = torch.load(tmp_path/'models'/'m.pth')
    assert torch.equal(back['0.weight'], x)
    ours.export('e.pkl'); assert torch.equal(load_learner(tmp_path/'e.pkl').model[0].weight, x)
    with ours.no_bar(), ours.no_logging(): v1 = ours.validate(); v2 = theirs.validate()
    assert v1 == v2 and torch.equal(ours.model[0].weight, x)                         # validate() after fit: still x

@pytest.mark.parametrize('guard', [True, False])
def test_schedulefree_without_its_callback_stops_at_the_first_step(guard):
    learn = learner('mlp', rule_opt(schedulefree_adamw_rule, guard=guard), 3e-3)
    with pytest.raises((RuleError, RuntimeError), match=r"add `ScheduleFreeEval\(\)` to the Learner's callbacks"):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert same_weights(learn.model, MODELS['mlp']) and learn.recorder.values == []

def test_schedulefree_eval_needs_a_schedulefree_optimizer():
    learn = learner('mlp', rule_opt(lion_rule), 3e-4, [ScheduleFreeEval()])
    with pytest.raises(TypeError, match='ScheduleFreeEval switches a Schedule-Free optimizer'):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert same_weights(learn.model, MODELS['mlp'])

# ---- bad input

def test_bad_hypers_are_refused_by_name():
    with pytest.raises(TypeError, match=r"rule `lion_rule` has no hyper-parameter `betas`; after p, g, state it takes \['lr', 'mom', 'sqr_mom', 'wd', 'do_wd'\]"):
        rule_opt(lion_rule, betas=(0.9, 0.99))
    learn = learner('mlp', rule_opt(lion_rule), 3e-4)
    learn.create_opt(); learn.opt.set_hypers(eps=1e-8)    # one Lion has no use for, set by hand
    with pytest.raises(TypeError, match="rule `lion_rule` has no hyper-parameter `eps`, which was set on its optimizer"):
        with learn.no_bar(), learn.no_logging(): learn.fit(1, reset_opt=False)
    assert same_weights(learn.model, MODELS['mlp'])

def test_a_rule_that_breaks_a_weight_stops_with_its_weights_intact():
    def broken_lion(p, g, state, lr, mom=0.9, sqr_mom=0.99, wd=0., do_wd=True):
        lion_rule(p, g, state, lr, mom, sqr_mom, wd, do_wd)
        if state.setdefault('n', 0) == 2 and p.ndim == 1: p.fill_(float('nan'))
        state['n'] += 1
    class Snap(Callback):
        order = 100
        def after_step(self):
            self.w = copy.deepcopy(self.learn.model.state_dict())
            self.st = [{k: copy.deepcopy(v) for k,v in self.learn.opt.state[p].items()} for p in self.learn.model.parameters()]
    snap = Snap(); learn = learner('mlp', rule_opt(broken_lion), 3e-4, [snap])
    with pytest.raises(RuleError, match=r"rule `broken_lion` left non-finite values in it on parameter `1 of group 0, shape \(8,\)` at step 3"):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert all(torch.equal(v, snap.w[k]) for k,v in learn.model.state_dict().items())
    for p,st in zip(learn.model.parameters(), snap.st):
        assert learn.opt.state[p]['n'] == 2 and torch.equal(learn.opt.state[p]['grad_avg'], st['grad_avg'])

# ---- compare_optimizers(opt='lion'|'schedulefree'|'ademamix')

@pytest.mark.parametrize('opt', ['lion', 'schedulefree', 'ademamix'])
def test_compare_puts_the_reference_the_rule_and_adamw_side_by_side(opt):
    res = compare_optimizers(opt=opt, lr=0.05, wd=0.01, epochs=2, schedule='one_cycle')
    df = res.df.set_index('contender')
    assert res.mismatches() == [] and df.identical.tolist() == [True, True, False]
    assert df.index[0] == {'lion': 'lion_pytorch.Lion', 'schedulefree': 'schedulefree.AdamWScheduleFree',
                           'ademamix': 'pytorch_optimizer.AdEMAMix'}[opt]
    assert df.iloc[2].first_step >= 1 and df.iloc[2].first_param == 'a' and df.iloc[2].first_dw > 0

def test_compare_locates_where_a_rule_leaves_the_reference():
    res = compare_optimizers(opt='ademamix', rule=partial(ademamix_rule, sqr_mom=torch.nextafter(torch.tensor(0.999), torch.tensor(1.)).item()), epochs=2)
    row = res.df.set_index('contender').loc['rule ademamix_rule']
    assert row.identical == False and row.first_step >= 1 and row.first_param == 'a' and 0 < row.first_dw < 1e-4
    with pytest.raises(TypeError, match="rule `lion_rule` has no hyper-parameter `betas`"): compare_optimizers(opt='lion', betas=(0.9, 0.99))
    with pytest.raises(TypeError, match="rule `lion_rule` has no hyper-parameter `decouple_wd`"): compare_optimizers(opt='lion', decouple_wd=False)
    assert modern_reference('ademamix', decouple_wd=True).keywords['opt'].keywords['weight_decouple'] is True

def _mlp(dls): return nn.Sequential(nn.Linear(dls.train.dataset.tensors[0].shape[1], 8), nn.ReLU(), nn.Linear(8, 1), nn.Flatten(0))

@pytest.mark.parametrize('opt,ref,lr', [('muon', 'sgd_callbacks.optim.muon.MuonAdamW', 0.02), ('prodigy', 'prodigyopt.Prodigy', None)])
def test_compare_muon_and_prodigy_against_their_references(opt, ref, lr):
    "An MLP (matrices for Muon's orthogonalisation, biases for its AdamW) on diabetes: the rule's row is the reference's, bit for bit"
    set_seed(42); m0 = _mlp(diabetes_dls())
    res = compare_optimizers(diabetes_dls, _mlp, lr=lr, wd=0.01, epochs=2, opt=opt)
    df = res.df.set_index('contender')
    test_names = [ref, f'rule_opt({opt}_rule)', 'fastai Adam (AdamW)']
    assert df.index.tolist() == test_names and df.expected.tolist() == [True, True, False]
    assert res.mismatches() == [] and df.identical.tolist() == [True, True, False]
    for k in test_names[:2]: assert torch.equal(res.losses[k], res.losses[ref])
    assert not same_weights(res.models[ref], m0) # the parity is of weights that moved
    assert all(not torch.equal(a, b) for a,b in zip(res.models[ref].parameters(), m0.parameters())) # every tensor moved
    adamw = df.loc['fastai Adam (AdamW)']
    assert adamw.first_step == 1 and adamw.first_param == '0.weight' and adamw.first_dw > 0 and adamw.note == "fastai's nearest: another update"

def muon_ulp_off(p, g, state, **kw):
    "Muon, then its first matrix weight one float32 ulp up (a ulp in a hyper-parameter is rounded away by the weights)"
    muon_rule(p, g, state, **kw)
    if p.ndim == 2: p.view(-1)[:1] = torch.nextafter(p.view(-1)[:1], torch.tensor(float('inf')))
muon_ulp_off.__wrapped__ = muon_rule # its signature (hyper-parameters and defaults) is muon_rule's

def test_compare_flags_a_muon_rule_one_ulp_off(monkeypatch):
    "As a rule of one's own the runner says where it left; as the package's rule it is a mismatch"
    res = compare_optimizers(diabetes_dls, _mlp, lr=0.02, epochs=1, opt='muon', rule=muon_ulp_off)
    row = res.df.set_index('contender').loc['rule muon_ulp_off']
    assert row.identical == False and row.expected == False and row.first_step == 1 and row.first_param == '0.weight'
    assert 0 < row.first_dw < 1e-6 and 'your rule' in row.note and res.mismatches() == []
    monkeypatch.setattr(compare.MODERN['muon'], 'rule', muon_ulp_off)
    res = compare_optimizers(diabetes_dls, _mlp, lr=0.02, epochs=1, opt='muon')
    assert [k for k,_ in res.mismatches()] == ['rule_opt(muon_ulp_off)']
    assert 'should be bit-identical' in res.df.note[1] and res.df.first_step[1] == 1

def test_the_guard_checks_your_rules_every_step_and_the_package_rules_first_step():
    "The package's rules run unguarded after a checked first step (their tests prove them); a rule of your own, every step"
    from sgd_callbacks.optim.step import shipped_rule
    def mine(p, g, state, lr, mom=0.9, sqr_mom=0.99, wd=0., do_wd=True): lion_rule(p, g, state, lr, mom, sqr_mom, wd, do_wd)
    assert shipped_rule(lion_rule) and shipped_rule(partial(lion_rule, mom=0.8)) and not shipped_rule(mine)
    def broken_at_step_2(rule, guard):
        p = nn.Parameter(torch.ones(4)); opt = RuleOptimizer([p], rule, guard=guard, lr=0.1)
        p.grad = torch.ones(4); opt.step()
        w1 = p.detach().clone()
        opt.set_hyper('lr', float('inf')); opt.step()  # a step that writes -inf into the weight
        return p, w1
    for rule,guard in ((mine, None), (lion_rule, True)):
        with pytest.raises(RuleError, match="left non-finite values"): p,w1 = broken_at_step_2(rule, guard)
    p,w1 = broken_at_step_2(lion_rule, None)
    assert torch.isinf(p).all() and not torch.isinf(w1).any() # unguarded after its first step, as fastai's optimizers
    p = nn.Parameter(torch.ones(4)); opt = RuleOptimizer([p], lion_rule, lr=float('inf')); p.grad = torch.ones(4)
    with pytest.raises(RuleError, match="left non-finite values"): opt.step() # its first step is checked
    assert torch.equal(p, torch.ones(4))
