"""ScratchStep and the hand-written rules: one step against fastai's optimizers over random shapes and hyper-parameters,
whole fits bit for bit on three learners, resume, the user's own rule, and bad input."""
import copy
import pytest, torch
from torch import nn
from hypothesis import given, settings, strategies as st
from fastai.basics import (Learner, Optimizer, OptimWrapper, Callback, CrossEntropyLossFlat, partial, set_seed,
                           SGD, RMSProp, Adam, RAdam, QHAdam, Larc, Lamb, ranger, weight_decay, l2_reg, sgd_step,
                           average_grad, momentum_step)
import fastai.callback.schedule, fastai.callback.core
from fastai.callback.training import GradientClip
from sgd_callbacks.all import *
from sgd_callbacks.scratch import mse
from sgd_callbacks.optim.fastai_rules import decay
from sgd_callbacks.vision import digits_data

def damped_sgd(params, lr, mom=0.9, wd=0., decouple_wd=True):
    "SGD with dampened momentum, `avg = mom*avg + (1-mom)*g`: a variant fastai's stages express but `SGD` does not build"
    return Optimizer(params, [weight_decay if decouple_wd else l2_reg, partial(average_grad, dampening=True), momentum_step],
                     lr=lr, mom=mom, wd=wd)

OPTS = {'sgd': SGD, 'sgd_damped': damped_sgd, 'sgd_mom': partial(SGD, mom=0.9), 'rmsprop': RMSProp, 'rmsprop_mom': partial(RMSProp, mom=0.9),
        'adam': Adam, 'radam': RAdam, 'sadam': partial(RAdam, beta=2.), 'qhadam': QHAdam, 'larc': Larc,
        'lars': partial(Larc, clip=False), 'larc_nomom': partial(Larc, mom=0.), 'lamb': Lamb, 'ranger': ranger}

# ---- one step, random shapes and hyper-parameters

shapes = st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3), min_size=1, max_size=4)
hypers = st.fixed_dictionaries(dict(lr=st.floats(1e-4, 1.), mom=st.floats(0., 0.99), sqr_mom=st.floats(0.5, 0.999),
                                    eps=st.sampled_from([1e-8, 1e-5, 1e-3]), wd=st.sampled_from([0.]) | st.floats(1e-4, 0.1),
                                    nu_1=st.floats(0., 1.), nu_2=st.floats(0., 1.), trust_coeff=st.floats(1e-3, 1.)))
lookaheads = st.fixed_dictionaries(dict(k=st.integers(1, 4), alpha=st.floats(0.05, 1.)))

def step_both(name, shapes, hp, decouple_wd, steps, seed, la_kw=None):
    "`steps` steps of fastai's optimizer `name` and of its rule on copies of random parameters; both lists, and the rule's optimizer"
    g = torch.Generator().manual_seed(seed)
    ref = [nn.Parameter(torch.randn(tuple(s), generator=g)) for s in shapes]
    ours = [nn.Parameter(p.detach().clone()) for p in ref]
    f = partial(OPTS[name], decouple_wd=decouple_wd, **(la_kw or {}))
    o_ref,o_ours = f(ref, lr=hp['lr']),f(ours, lr=hp['lr'])
    for o in (o_ref, o_ours):
        o.set_hypers(**{k: v for k,v in hp.items() if k in o.hypers[0]})
        o.state[o.param_lists[0][0]]['do_wd'] = False
    rule,la = rule_for(o_ours)
    for _ in range(steps):
        grads = [torch.randn(tuple(s), generator=g) for s in shapes]
        for p,gr in zip(ref, grads): p.grad = gr.clone()
        for p,gr in zip(ours, grads): p.grad = gr.clone()
        o_ref.step()
        with torch.no_grad():
            if la and la.slow_weights is None: la.slow_weights = [[p.detach().clone() for p in pg] for pg in la.param_lists]
            for p in ours: rule(p, p.grad, o_ours.state[p], do_wd=o_ours.state[p].get('do_wd', True), **o_ours.hypers[0])
            if la: lookahead_stage(la)
    return ref,ours,o_ours

@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(OPTS)), shapes, hypers, st.booleans(), st.integers(1, 7), st.integers(0, 2**31), lookaheads)
def test_steps_match_fastai(name, shapes, hp, decouple_wd, steps, seed, la_kw):
    "Up to 7 steps of each rule equal fastai's optimizer's, bit for bit, with decay on one parameter only; QHAdam's `nu_1`, `nu_2`, Larc's `trust_coeff` and ranger's `k`, `alpha` drawn too"
    ref,ours,_ = step_both(name, shapes, hp, decouple_wd, steps, seed, la_kw if name == 'ranger' else None)
    for a,b in zip(ref, ours): assert torch.equal(a, b)

HP = dict(lr=0.01, mom=0.9, sqr_mom=0.9, eps=1e-5, wd=0.01)

@pytest.mark.parametrize('name', ['radam', 'sadam', 'ranger'])
def test_radam_rectified_branch(name):
    "With sqr_mom=0.9 the variance's memory r passes 5 at step 6: ten steps take RAdam's momentum steps, then rectified ones"
    b = HP['sqr_mom']; r_inf = 2/(1-b) - 1
    r = lambda t: r_inf - 2*t*b**t/(1-b**t)
    assert r(1) <= 5 < r(10) # both branches
    ref,ours,_ = step_both(name, [[3, 4], [5]], HP, True, 10, 0, dict(k=20) if name == 'ranger' else None) # no sync: RAdam's steps alone
    for a,b in zip(ref, ours): assert torch.equal(a, b)

@pytest.mark.parametrize('k,alpha', [(1, 0.5), (2, 0.3), (3, 1.)])
def test_lookahead_syncs(k, alpha):
    "Seven steps of ranger with k in 1..3: at least two syncs of the slow weights, bit-identical to fastai's Lookahead"
    ref,ours,o = step_both('ranger', [[3, 4], [5]], HP, True, 7, 1, dict(k=k, alpha=alpha))
    assert o.count == 7 and 7//k >= 2
    for a,b in zip(ref, ours): assert torch.equal(a, b)
    assert all(torch.equal(p, s) for p,s in zip(ours, o.slow_weights[0])) == (7 % k == 0) # just synced: fast == slow

@pytest.mark.parametrize('name,hp', [('qhadam', dict(nu_1=0.3, nu_2=0.5)), ('qhadam', dict(nu_1=1., nu_2=0.)),
                                     ('larc', dict(trust_coeff=0.5)), ('lars', dict(trust_coeff=0.001))])
def test_other_hyper_parameters(name, hp):
    "QHAdam with nu_2 < 1 (its default 1 zeroes the raw gradient's square), Larc and LARS with another trust_coeff"
    ref,ours,o = step_both(name, [[3, 4], [5]], dict(HP, **hp), False, 5, 2)
    assert all(o.hypers[0][k] == v for k,v in hp.items())
    for a,b in zip(ref, ours): assert torch.equal(a, b)

# ---- whole fits in a Learner: the lesson's model, diabetes, a small CNN with BatchNorm and three groups

def small_cnn():
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
                         nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                         nn.Linear(8, 10))

MAKERS = {
    'lesson':   lambda: dict(dls=linear_dls(bs=10), model=LinearModel(), loss_func=mse),
    'diabetes': lambda: (lambda d: dict(dls=d, model=LinearModel(11, init=torch.linspace(-0.5, 0.5, 11)), loss_func=mse))(diabetes_dls(bs=64)),
    'cnn':      lambda: dict(dls=tensor_dls(*(t[:240] for t in digits_data(8)), bs=32), model=small_cnn(), loss_func=CrossEntropyLossFlat(),
                             splitter=lambda m: [list(m[0].parameters()), list(m[1].parameters()), list(m[2].parameters())]),
}

def train(maker, opt_func, scratch, sched, wd, lr=1e-2):
    set_seed(0)
    learn = Learner(**MAKERS[maker](), opt_func=opt_func, lr=lr, wd=wd, cbs=[EpochShuffle()] + ([ScratchStep()] if scratch else []))
    learn.w0 = copy.deepcopy(learn.model.state_dict()) # where it starts (a nonzero start: Larc's rate is |p|/|g|)
    fit = learn.fit_one_cycle if sched == 'one_cycle' else learn.fit
    with learn.no_bar(), learn.no_logging():
        if maker == 'cnn':
            learn.freeze(); fit(1)
            learn.unfreeze(); fit(1, slice(lr/10, lr))
        else: fit(2)
    return learn

@pytest.mark.parametrize('maker', sorted(MAKERS))
@pytest.mark.parametrize('name', sorted(OPTS))
def test_fits_match_fastai(maker, name):
    "fit and fit_one_cycle, weight decay off, decoupled and L2: the whole state_dict as fastai's optimizer leaves it"
    for sched in ('fit', 'one_cycle'):
        for wd,dec in ((0., True), (0.01, True), (0.01, False)):
            f = partial(OPTS[name], decouple_wd=dec)
            ref,ours = train(maker, f, False, sched, wd),train(maker, f, True, sched, wd)
            assert same_weights(ref.model, ours.model), (sched, wd, dec, max_weight_diff(ref.model, ours.model))
            moved = [k for k,p in ours.model.named_parameters() if not torch.equal(p, ours.w0[k])]
            # every weight matrix or kernel moved (a bias before BatchNorm has a zero gradient, and Larc's rate, ∝|p|, keeps a zero at zero)
            must = [k for k,p in ours.model.named_parameters() if p.dim() > 1] or list(ours.w0)
            assert set(must) <= set(moved), (sched, wd, dec, moved)

def ulp_off(rule):
    "The rule, then its parameter's first element moved by one unit in the last place"
    def off(p, *a, **kw):
        rule(p, *a, **kw)
        w = p.view(-1); w[0] = torch.nextafter(w[0], torch.tensor(float('inf')))
    return off

@pytest.mark.parametrize('maker', sorted(MAKERS))
def test_rule_off_by_one_ulp_is_caught(monkeypatch, maker):
    "Mutation: Adam's rule one ulp off in one weight per step; the fit no longer matches fastai's"
    import sgd_callbacks.optim.fastai_rules as rules
    from fastai.optimizer import adam_step
    monkeypatch.setitem(rules.RULES, adam_step, ulp_off(rules.RULES[adam_step]))
    ref,ours = train(maker, Adam, False, 'fit', 0.),train(maker, Adam, True, 'fit', 0.)
    assert not same_weights(ref.model, ours.model)

# ---- resume

@pytest.mark.parametrize('name', ['adam', 'lamb', 'ranger', 'sgd_mom'])
def test_resume_is_bit_identical(name, tmp_path):
    "fit_one_cycle(4) in one go equals 2 epochs, save(with_opt), fresh learner, load, start_epoch=2; and from fastai's own checkpoint"
    def mk(scratch=True):
        set_seed(0)
        return Learner(linear_dls(bs=10), LinearModel(), loss_func=mse, opt_func=OPTS[name], lr=0.05, wd=0.01, path=tmp_path,
                       cbs=[EpochShuffle()] + ([ScratchStep()] if scratch else []))
    whole = mk()
    with whole.no_bar(), whole.no_logging(): whole.fit_one_cycle(4)
    for first_scratch in (True, False): # a checkpoint of fastai's optimizer is one ScratchStep continues exactly
        a = mk(first_scratch)
        with a.no_bar(), a.no_logging(): a.fit_one_cycle(4, cbs=[StopAfter(2)])
        a.save('half', with_opt=True)
        b = mk(); b.load('half', with_opt=True)
        with b.no_bar(), b.no_logging(): b.fit_one_cycle(4, start_epoch=2)
        assert same_weights(whole.model, b.model), first_scratch

class StopAfter(Callback):
    def __init__(self, n): self.n = n
    def after_epoch(self):
        if self.epoch+1 == self.n: raise fastai.callback.core.CancelFitException()

# ---- the user's own rule

def lesson_rule(p, g, state, lr, **_): p.sub_(lr*g)

def momentum_rule(p, g, state, lr, mom, **_):
    "Heavy-ball momentum kept in `state`, as a user would write it"
    buf = state.setdefault('my_buf', torch.zeros_like(p))
    buf.mul_(mom).add_(g)
    p.sub_(lr*buf)

def test_user_rule_in_a_stock_learner(tmp_path):
    set_seed(0)
    learn = Learner(diabetes_dls(bs=64), LinearModel(11), loss_func=mse, opt_func=partial(SGD, mom=0.9), lr=0.05, path=tmp_path,
                    cbs=ScratchStep(rule=momentum_rule))
    with learn.no_bar(), learn.no_logging():
        before = learn.validate()[0]; learn.fit(3); after = learn.validate()[0]
    assert after < 0.7*before
    p = learn.model.a
    assert 'my_buf' in learn.opt.state[p] and learn.opt.state[p]['my_buf'].abs().sum() > 0
    learn.save('m', with_opt=True)
    fresh = Learner(diabetes_dls(bs=64), LinearModel(11), loss_func=mse, opt_func=partial(SGD, mom=0.9), path=tmp_path)
    fresh.load('m', with_opt=True)
    assert torch.equal(fresh.opt.state[fresh.model.a]['my_buf'], learn.opt.state[p]['my_buf'])

def test_compare_names_where_the_lesson_rule_leaves_fastai():
    res = compare_optimizers(opt='sgd', rule=lesson_rule, epochs=3)
    row = res.df.set_index('contender').loc['rule lesson_rule']
    assert row.identical == False and row.first_step >= 1 and row.first_param == 'a' and 0 < row.first_dw < 1e-5
    fa = res.df.set_index('contender').loc['ScratchSGD']
    assert fa.identical == True

# ---- bad input

def fit1(opt_func, rule=None, cbs=()):
    set_seed(0)
    learn = Learner(linear_dls(bs=10), LinearModel(), loss_func=mse, opt_func=opt_func, lr=0.1, cbs=[ScratchStep(rule=rule), *cbs])
    return learn

def test_unknown_optimizer_is_refused_before_any_step():
    for opt_func in (partial(OptimWrapper, opt=torch.optim.SGD), lambda ps, lr: Optimizer(ps, [weight_decay, sgd_step, sgd_step], lr=lr)):
        learn = fit1(opt_func); a0 = learn.model.a.detach().clone()
        with pytest.raises(TypeError, match="rules for fastai's SGD, RMSProp, Adam, RAdam, QHAdam, Larc, Lamb"):
            with learn.no_bar(), learn.no_logging(): learn.fit(1)
        assert torch.equal(learn.model.a, a0)

def test_rule_with_wrong_signature():
    def two_args(p, g): p.sub_(g)
    learn = fit1(SGD, two_args); a0 = learn.model.a.detach().clone()
    with pytest.raises(TypeError, match=r"rule `two_args\(p, g\)` cannot be called as `rule\(p, g, state, \*\*hypers\)`"):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert torch.equal(learn.model.a, a0)
    with pytest.raises(TypeError, match='`rule` must be a function'): ScratchStep(rule='sgd')

class Snap(Callback):
    "The weights and optimizer state after each step that went through"
    order = 100
    def after_step(self):
        self.w = copy.deepcopy(self.learn.model.state_dict()); self.st = copy.deepcopy(dict(self.learn.opt.state))

def breaks_at(n, how):
    def rule(p, g, state, lr, **_):
        state['n'] = state.get('n', 0) + 1
        if state['n'] < n: return p.add_(g, alpha=-lr)
        if how == 'raise': raise ValueError('my bug')
        if how == 'shape': p.data = p.data[:1]
        if how == 'dtype': p.data = p.data.double()
        if how == 'nan': p.mul_(float('nan'))
    rule.__name__ = f'breaks_{how}'
    return rule

@pytest.mark.parametrize('how,msg', [('raise', 'raised ValueError: my bug'), ('shape', r'changed it from \(2,\) torch.float32 to \(1,\)'),
                                     ('dtype', 'to (2,) torch.float64'), ('nan', 'left non-finite values')])
def test_rule_that_breaks_a_parameter(how, msg):
    snap = Snap()
    learn = fit1(SGD, breaks_at(3, how), cbs=[snap])
    with pytest.raises(RuleError, match=rf"rule `breaks_{how}` .*{msg if how != 'dtype' else 'torch.float64'}.* parameter `a`"):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert all(torch.equal(v, snap.w[k]) for k,v in learn.model.state_dict().items())  # those of the last good step
    assert learn.model.a.dtype == torch.float32 and learn.model.a.shape == (2,)
    assert learn.opt.state[learn.model.a]['n'] == 2                              # its state too

@pytest.mark.parametrize('opt', ['rmsprop', 'adam', 'radam', 'qhadam', 'larc', 'lamb', 'ranger'])
def test_compare_every_optimizer(opt):
    "fastai's optimizer and ScratchStep bit-identical; torch.optim's counterpart run and, where it differs, located"
    res = compare_optimizers(opt=opt, epochs=2, lr=0.05, wd=0.01, decouple_wd=opt != 'rmsprop')
    df = res.df.set_index('contender')
    assert res.mismatches() == [] and df.loc['ScratchStep', 'identical'] is True
    tor = [c for c in df.index if c.startswith('torch.optim')]
    assert len(tor) == 1
    row = df.loc[tor[0]]
    if opt in ('rmsprop', 'adam', 'radam'):
        assert row.identical is True or (row.first_step >= 1 and row.first_param == 'a' and row.first_dw > 0), row
        assert row.max_dw < 1e-3 # rounding, not another update
    else: assert row.identical == 'n/a' and 'has no' in row.note

def test_compare_bad_opt_arguments():
    with pytest.raises(ValueError, match="`opt` must be one of sgd, rmsprop, adam"): compare_optimizers(opt='adagrad')
    with pytest.raises(TypeError, match=r"Adam has no hyper-parameter \['k'\]"): compare_optimizers(opt='adam', k=3)
    with pytest.raises(TypeError, match='`rule` must be a function'): compare_optimizers(rule=1)

# ---- rule_opt: a rule as a Learner's optimizer

@whole_step
def clipped_sgd_rule(ps, gs, states, hypers, lr, wd=0., max_norm=1.):
    "SGD on the gradients scaled to a global norm of at most `max_norm` (as `clip_grad_norm_`); a step count in `states[0]`"
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gs]))
    states[0]['steps'] = states[0].get('steps', 0) + 1
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.)
    for p,g,h in zip(ps, gs, hypers):
        decay(p, g, h['lr'], h['wd'], h['do_wd'])
        p.add_(g*scale, alpha=-h['lr'])

def run(maker, opt_func, sched='one_cycle', wd=0.01, cbs=(), epochs=2, lr=1e-2, learn=None, **kw):
    set_seed(0)
    learn = learn or Learner(**MAKERS[maker](), opt_func=opt_func, lr=lr, wd=wd, cbs=[EpochShuffle(), *cbs], **kw)
    fit = learn.fit_one_cycle if sched == 'one_cycle' else learn.fit
    with learn.no_bar(), learn.no_logging():
        if maker == 'cnn':
            learn.freeze(); fit(1)
            learn.unfreeze(); fit(epochs-1, slice(lr/10, lr))
        else: fit(epochs)
    return learn

@pytest.mark.parametrize('maker', ['diabetes', 'cnn'])
@pytest.mark.parametrize('sched', ['fit', 'one_cycle'])
@pytest.mark.parametrize('name,rule', [('adam', adam_rule), ('sgd_mom', partial(sgd_rule, use_mom=True)), ('qhadam', qhadam_rule)])
def test_rule_opt_is_fastais_optimizer(maker, sched, name, rule):
    "`rule_opt(rule)` trains as fastai's optimizer does, bit for bit: schedules, `wd` off BatchNorm and biases, freeze, `slice`"
    ref,ours = run(maker, OPTS[name], sched),run(maker, rule_opt(rule, **({'mom': 0.9} if name == 'sgd_mom' else {})), sched)
    assert isinstance(ours.opt, RuleOptimizer) and same_weights(ours.model, ref.model)
    set_seed(0); start = Learner(**MAKERS[maker]()).model
    assert not same_weights(start, ours.model)

@pytest.mark.parametrize('maker', ['diabetes', 'cnn'])
def test_whole_step_rule_is_sgd_behind_gradient_clip(maker):
    "A `whole_step` rule sees every gradient at once: global-norm clipping, bit for bit fastai's `GradientClip` + `SGD`"
    ours = run(maker, rule_opt(clipped_sgd_rule, max_norm=0.1), 'fit', lr=0.05)
    ref = run(maker, SGD, 'fit', lr=0.05, cbs=[GradientClip(0.1)])
    assert same_weights(ours.model, ref.model)
    assert not same_weights(ours.model, run(maker, SGD, 'fit', lr=0.05).model)   # the clip did something
    first = next(p for p in ours.opt.all_params(with_grad=False).itemgot(0) if ours.opt.state[p].get('steps'))
    assert ours.opt.state[first]['steps'] == ours.n_epoch*len(ours.dls.train) or maker == 'cnn'

@pytest.mark.parametrize('name,rule', [('adam', adam_rule), ('clip', clipped_sgd_rule)])
def test_rule_opt_resume_is_bit_identical(name, rule, tmp_path):
    "Save with the optimizer after one epoch, load into a fresh learner, go on: the weights of a straight run"
    mk = lambda: Learner(**MAKERS['diabetes'](), opt_func=rule_opt(rule), lr=1e-2, wd=0.01, path=tmp_path, cbs=EpochShuffle())
    set_seed(0); straight = mk()
    with straight.no_bar(), straight.no_logging(): straight.fit_one_cycle(3)
    set_seed(0); first = mk()
    with first.no_bar(), first.no_logging(): first.fit_one_cycle(3, cbs=StopAfter(1))
    first.save('one', with_opt=True)
    set_seed(0); fresh = mk(); fresh.load('one', with_opt=True)
    with fresh.no_bar(), fresh.no_logging(): fresh.fit_one_cycle(3, start_epoch=1)
    assert same_weights(fresh.model, straight.model) and not same_weights(fresh.model, first.model)
    assert any(len(s) for s in fresh.opt.state.values())

def test_rule_opt_lr_find_export(tmp_path):
    "`lr_find` leaves the weights as they were; `export` pickles the `opt_func` and `load_learner` predicts with it"
    set_seed(0)
    learn = Learner(**MAKERS['diabetes'](), opt_func=rule_opt(adam_rule, eps=1e-8), lr=1e-2, path=tmp_path, cbs=EpochShuffle())
    w0 = copy.deepcopy(learn.model.state_dict())
    with learn.no_bar(), learn.no_logging(): sug = learn.lr_find(show_plot=False)
    assert sug.valley > 0 and all(torch.equal(v, w0[k]) for k,v in learn.model.state_dict().items())
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert learn.opt.hypers[0]['eps'] == 1e-8
    learn.export('m.pkl')
    from fastai.learner import load_learner
    back = load_learner(tmp_path/'m.pkl')
    assert same_weights(back.model, learn.model) and back.opt_func.keywords['rule'] is adam_rule

def sign_rule(p, g, state, lr, wd=0., do_wd=True):
    decay(p, g, lr, wd, do_wd)
    p.add_(g.sign(), alpha=-lr)

def test_rule_opt_bad_input():
    ps = [nn.Parameter(torch.ones(2))]
    with pytest.raises(TypeError, match="rule `sign_rule` has no hyper-parameter `beta`; after p, g, state it takes \\[.lr., .wd., .do_wd.\\]"): rule_opt(sign_rule, beta=0.9)
    with pytest.raises(TypeError, match='`rule` must be a function'): rule_opt('lion')
    def needs_beta(p, g, state, lr, beta): p.add_(g, alpha=-lr*beta)
    with pytest.raises(TypeError, match=r"missing a required argument: 'beta'.*rule_opt\(needs_beta, name=value\)"): rule_opt(needs_beta)(ps, lr=0.1)
    rule_opt(needs_beta, beta=0.5)(ps, lr=0.1)                        # given: fine
    def no_lr(p, g, state): p.sub_(g)
    with pytest.raises(TypeError, match="rule `no_lr` has no hyper-parameter `lr`"): rule_opt(no_lr)(ps, lr=0.1)
    def no_state(p, g, lr): p.sub_(g)
    with pytest.raises(TypeError, match=r"rule `no_state` has no hyper-parameter `lr`; after p, g, state it takes \[\]"): rule_opt(no_state)(ps, lr=0.1)
    def two_args(p, g): p.sub_(g)
    with pytest.raises(TypeError, match=r"cannot be called as `rule\(p, g, state, \*\*hypers\)`"): rule_opt(two_args)
    def no_lists(ps, gs, lr): pass
    with pytest.raises(TypeError, match=r"cannot be called as `rule\(ps, gs, states, hypers, \*\*hypers\)`"): rule_opt(whole_step(no_lists))

def test_rule_opt_refuses_a_hyper_set_later_before_the_step():
    "`Learner(wd=...)` on a rule with no `wd`: refused by name before any weight moves; fit_one_cycle's `mom` is ignored"
    def plain(p, g, state, lr): p.add_(g, alpha=-lr)
    set_seed(0)
    learn = Learner(**MAKERS['diabetes'](), opt_func=rule_opt(plain), lr=1e-2, wd=0.1, cbs=EpochShuffle())
    w0 = copy.deepcopy(learn.model.state_dict())
    with pytest.raises(TypeError, match="rule `plain` has no hyper-parameter `wd`, which was set on its optimizer"):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert all(torch.equal(v, w0[k]) for k,v in learn.model.state_dict().items())
    learn.wd = None
    with learn.no_bar(), learn.no_logging(): learn.opt = None; learn.fit_one_cycle(1)
    assert not all(torch.equal(v, w0[k]) for k,v in learn.model.state_dict().items())

@pytest.mark.parametrize('how,msg', [('raise', 'raised ValueError: my bug'), ('shape', r'changed it from \(2,\) torch.float32 to \(1,\)'),
                                     ('nan', 'left non-finite values')])
def test_rule_opt_rule_that_breaks_a_parameter(how, msg):
    snap = Snap()
    set_seed(0)
    learn = Learner(linear_dls(bs=10), LinearModel(), loss_func=mse, opt_func=rule_opt(breaks_at(3, how)), lr=0.1, cbs=[snap])
    with pytest.raises(RuleError, match=rf"rule `breaks_{how}` {msg}.* on parameter `0 of group 0, shape \(2,\)` at step 3"):
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert all(torch.equal(v, snap.w[k]) for k,v in learn.model.state_dict().items())
    assert learn.opt.state[learn.model.a]['n'] == 2

def test_rule_opt_nan_gradient_is_not_the_rules_fault():
    "A non-finite gradient (divergence) goes through as in fastai's optimizers: `TerminateOnNaN` and `lr_find` handle it"
    p = nn.Parameter(torch.ones(2)); opt = rule_opt(sign_rule)([p], lr=0.1)
    p.grad = torch.tensor([float('nan'), 1.]); opt.step()
    assert p[1] == 0.9

@whole_step
def clipped_sgd_any(ps, gs, states, hypers, lr, max_norm=1., **_):
    "`clipped_sgd_rule` taking any hyper-parameter, as `ScratchStep` hands it all of fastai's optimizer's"
    return clipped_sgd_rule(ps, gs, states, hypers, lr, max_norm=max_norm)

def test_scratch_step_takes_a_whole_step_rule():
    ours = run('diabetes', SGD, 'fit', lr=0.05, cbs=[ScratchStep(rule=partial(clipped_sgd_any, max_norm=0.1))])
    assert same_weights(ours.model, run('diabetes', SGD, 'fit', lr=0.05, cbs=[GradientClip(0.1)]).model)
