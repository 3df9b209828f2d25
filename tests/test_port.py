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
