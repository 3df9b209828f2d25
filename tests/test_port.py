"Every supported `port` trains bit-identically to its source (`torch.equal` after every step, weights that moved); the rest is refused"
import pytest, torch
from functools import partial
from torch import nn
from torch.optim import lr_scheduler as ls
from fastai.optimizer import SGD, RMSProp, Adam
from sgd_callbacks.data import diabetes_dls
from sgd_callbacks.explain import Setup
from sgd_callbacks.port import port

@pytest.fixture(scope='module')
def dls(): return diabetes_dls(bs=128)
def mlp(): torch.manual_seed(0); return nn.Sequential(nn.Linear(11, 4), nn.ReLU(), nn.Linear(4, 1))
N = 8 # 2 epochs of 4 batches
T = torch.optim
SCHEDS = {'constant': None, 'onecycle': partial(ls.OneCycleLR, max_lr=1e-2, total_steps=N),
          'cosine': partial(ls.CosineAnnealingLR, T_max=N), 'warmup': partial(ls.LinearLR, start_factor=0.1, total_iters=3),
          'warmup+cosine': lambda o: ls.SequentialLR(o, [ls.LinearLR(o, start_factor=0.1, total_iters=3), ls.CosineAnnealingLR(o, T_max=5)], [3])}
SCHEDS['warmup+cosine'].__name__ = 'SequentialLR'
OPTS = {'sgd': partial(T.SGD, momentum=0.9, weight_decay=0.01), 'adam': partial(T.Adam, weight_decay=0.01),
        'adamw': partial(T.AdamW, weight_decay=0.1), 'rmsprop': partial(T.RMSprop, weight_decay=0.01)}

@pytest.mark.parametrize('sched', SCHEDS)
@pytest.mark.parametrize('opt', OPTS)
def test_torch_to_fastai(dls, opt, sched):
    if opt == 'rmsprop' and sched == 'onecycle': # OneCycleLR cycles RMSprop's momentum: fastai's RMSProp has another update then
        with pytest.raises(ValueError, match='momentum'): port(Setup(OPTS[opt], lr=1e-2, sched=SCHEDS[sched]), dls=dls, model=mlp())
        return
    p = port(Setup(OPTS[opt], lr=1e-2, sched=SCHEDS[sched]), to='fastai', dls=dls, model=mlp())
    assert p.identical and p.moved, p

@pytest.mark.parametrize('fit', ['fit', 'fit_one_cycle', 'fit_flat_cos'])
@pytest.mark.parametrize('opt', ['sgd', 'sgd_mom', 'rmsprop'])
def test_fastai_to_torch(dls, opt, fit):
    o = dict(sgd=partial(SGD, decouple_wd=False), sgd_mom=partial(SGD, mom=0.9, decouple_wd=False), rmsprop=partial(RMSProp, decouple_wd=False))[opt]
    p = port(Setup(o, lr=1e-2, wd=0.01, wd_bn_bias=True, fit=fit), to='torch', dls=dls, model=mlp())
    assert p.identical and p.moved, p

def test_refused_naming_what_is_supported(dls):
    with pytest.raises(TypeError, match='LBFGS'): port(Setup(T.LBFGS))
    with pytest.raises(ValueError, match='StepLR.*OneCycleLR'): port(Setup(T.SGD, sched=partial(ls.StepLR, step_size=2)))
    with pytest.raises(ValueError, match='nesterov|supports'): port(Setup(partial(T.SGD, momentum=0.9, nesterov=True)))
    with pytest.raises(ValueError, match='no class with its operations'): port(Setup(Adam), to='torch')
    with pytest.raises(ValueError, match='decoupled'): port(Setup(SGD, wd=0.1), to='torch')
    with pytest.raises(ValueError, match='`to`'): port(Setup(SGD), to='jax')

# torch's param groups: no decay on the biases and the norm layers, another lr for the head
from fastai.torch_core import norm_bias_params
def bn_mlp(): torch.manual_seed(0); return nn.Sequential(nn.Linear(11, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
def no_decay(m):
    nb = {id(p) for p in norm_bias_params(m)}
    return [{'params': [p for p in m.parameters() if id(p) not in nb], 'weight_decay': 0.05},
            {'params': [p for p in m.parameters() if id(p) in nb], 'weight_decay': 0.}]
def head(m): return [{'params': [*m[0].parameters(), *m[1].parameters()], 'weight_decay': 0.01},
                     {'params': list(m[3].parameters()), 'lr': 1e-2, 'weight_decay': 0.}]
def body_head(m): return [[*m[0].parameters(), *m[1].parameters()], list(m[3].parameters())]

@pytest.mark.parametrize('sched', ['constant', 'onecycle'])
@pytest.mark.parametrize('groups', ['no_decay', 'head'])
@pytest.mark.parametrize('opt', ['sgd', 'adamw', 'rmsprop'])
def test_torch_param_groups_to_fastai_and_back(dls, opt, groups, sched):
    if opt == 'rmsprop' and sched == 'onecycle': return # refused above: OneCycleLR gives RMSprop a momentum
    o = dict(sgd=partial(T.SGD, momentum=0.9), adamw=T.AdamW, rmsprop=T.RMSprop)[opt]
    p = port(Setup(o, lr=3e-3, splitter=dict(no_decay=no_decay, head=head)[groups], sched=SCHEDS[sched]), dls=dls, model=bn_mlp())
    assert p.identical and p.moved, p
    if groups == 'no_decay': # fastai's own form: wd_bn_bias=False, no splitter
        assert p.setup.splitter is None and p.setup.wd_bn_bias is False and p.setup.wd == 0.05, p
    else: assert p.setup.lr[1] == (1e-2 if sched == 'constant' else p.setup.lr[0]) and p.setup.wd == [0.01, 0.] and p.learner_kw['splitter']
    if opt == 'sgd' and sched == 'constant': # and back to torch: groups again, the same weights
        q = port(p.setup, to='torch', dls=dls, model=bn_mlp())
        assert q.identical and q.moved and q.setup.splitter is not None, q

@pytest.mark.parametrize('fit', ['fit', 'fit_one_cycle'])
def test_fastai_groups_to_torch(dls, fit):
    "A splitter with per-group lr and wd, and wd_bn_bias=False: torch param groups, the biases and norm layers apart"
    p = port(Setup(partial(SGD, mom=0.9, decouple_wd=False), lr=[1e-2, 1e-3], wd=[0.01, 0.], splitter=body_head, fit=fit),
             to='torch', dls=dls, model=bn_mlp())
    assert p.identical and p.moved, p
    gs = p.setup.splitter(bn_mlp())
    assert [(g['lr'], g['weight_decay'], len(g['params'])) for g in gs] == [(1e-2, 0.01, 1), (1e-2, 0., 3), (1e-3, 0., 2)]

def test_param_groups_refused_naming_what_is_supported(dls):
    def betas(m): return [{'params': list(m.parameters()), 'betas': (0.8, 0.99)}]
    with pytest.raises(ValueError, match="group 0 sets betas: port supports torch param groups.*'lr' and 'weight_decay'"):
        port(Setup(T.AdamW, splitter=betas), dls=dls, model=bn_mlp())
    with pytest.raises(ValueError, match="`setup.wd` would replace"): port(Setup(T.AdamW, wd=0.1, splitter=head), dls=dls, model=bn_mlp())
    with pytest.raises(ValueError, match='slice'): port(Setup(partial(SGD, decouple_wd=False), lr=slice(1e-3, 1e-2)), to='torch', dls=dls, model=bn_mlp())
    with pytest.raises(ValueError, match='3 values for 2 param groups'):
        port(Setup(SGD, lr=[1e-2]*3, splitter=body_head), to='torch', dls=dls, model=bn_mlp())

def no_decay_first(m): return no_decay(m)[::-1]

@pytest.mark.parametrize('sched', ['constant', 'onecycle'])
def test_no_decay_group_first_takes_the_decay_of_the_other(dls, sched):
    "The biases and norm layers' group first, without decay: fastai's wd is the other group's, not the first's 0"
    p = port(Setup(T.AdamW, lr=3e-3, splitter=no_decay_first, sched=SCHEDS[sched]), dls=dls, model=bn_mlp())
    assert p.identical and p.moved, p
    assert p.setup.splitter is None and p.setup.wd_bn_bias is False and p.setup.wd == 0.05, p

def test_the_learner_keywords_train_as_the_proof(dls):
    "What a user copies, `Learner(dls, model, **p.learner_kw)` fit as `p.fit` says: the source recipe's weights, bit for bit"
    from fastai.learner import Learner
    from sgd_callbacks.seeding import EpochShuffle
    from sgd_callbacks.scratch import mse
    from sgd_callbacks.explain import train_setup
    src = Setup(partial(T.SGD, momentum=0.9), lr=3e-3, splitter=head)
    p = port(src, dls=dls, model=bn_mlp())
    learn = Learner(dls, bn_mlp(), loss_func=mse, cbs=EpochShuffle(42), **p.learner_kw)
    with learn.no_bar(), learn.no_logging(): getattr(learn, p.setup.fit)(2, cbs=p.setup.cbs)
    assert p.fit == "learn.fit(n_epoch, cbs=[])"
    want = train_setup(src, dls, bn_mlp()).ws[-1]
    assert torch.equal(torch.cat([q.detach().flatten() for q in learn.model.parameters()]), want)

def test_refused_on_the_wrong_side_and_fastai_rmsprop_with_momentum(dls):
    with pytest.raises(ValueError, match='`setup` must be a torch setup to port to fastai'): port(Setup(SGD), to='fastai')
    with pytest.raises(ValueError, match='`setup` must be a fastai setup to port to torch'): port(Setup(T.SGD), to='torch')
    with pytest.raises(ValueError, match="fastai's RMSProp: torch.optim has no class"):
        port(Setup(partial(RMSProp, mom=0.9, decouple_wd=False)), to='torch', dls=dls, model=mlp())
