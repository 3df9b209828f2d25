"Bad input, offline `pretrained=True`, the digits loaders and a few-batch parity check of `sgd_callbacks.vision`"
import copy, socket, time
import pytest, torch
from fastcore.basics import partial
from fastai.callback.core import Callback, CancelFitException
from fastai.data.transforms import Category
from fastai.metrics import error_rate
from fastai.optimizer import SGD
from torchvision import models
from torchvision.models import get_model_weights
from sgd_callbacks.data import linear_dls
from sgd_callbacks.seeding import EpochShuffle
from sgd_callbacks.callback import ScratchSGD
from sgd_callbacks.weights import same_weights, max_weight_diff
from sgd_callbacks.vision import digits_dls, create_cnn


@pytest.fixture(scope='module')
def dls(): return digits_dls(size=16, bs=32)


@pytest.mark.parametrize('kw,msg', [
    (dict(size=7), '`size`'), (dict(size=4), '`size` must be between 8 and 224'), (dict(size=1000), '`size`'),
    (dict(size='32'), '`size`'), (dict(size=16.), '`size`'),
    (dict(bs=0), '`bs` must be between 1 and 1438'), (dict(bs=-1), '`bs`'), (dict(bs=5000), '`bs`'), (dict(bs=2.), '`bs`'),
    (dict(valid_pct=0.), '`valid_pct`'), (dict(valid_pct=1.), '`valid_pct` must be > 0 and < 1'), (dict(valid_pct=-0.1), '`valid_pct`'),
    (dict(valid_pct=1.5), '`valid_pct`'), (dict(valid_pct='a'), '`valid_pct`'), (dict(seed=-1), '`seed`')])
def test_digits_bad_input(kw, msg):
    "Each bad argument raises an error that names it"
    with pytest.raises((ValueError, TypeError), match=msg): digits_dls(**kw)


def test_digits_shapes_vocab(dls):
    xb,yb = dls.one_batch()
    assert xb.shape == (32,3,16,16) and yb.shape == (32,)
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert torch.equal(xb[:,0], xb[:,1]) and torch.equal(xb[:,0], xb[:,2])   # grey, three channels
    assert dls.c == 10 and list(dls.vocab) == list(range(10))
    assert len(dls.train_ds) + len(dls.valid_ds) == 1797 and len(dls.valid_ds) == round(1797*0.2)
    assert set(torch.cat([b[1] for b in dls.train]).tolist()) == set(range(10))
    assert digits_dls(size=8, bs=None).one_batch()[0].shape == (1438,3,8,8)


def test_digits_decode(dls):
    b = dls.valid.one_batch()
    x,y,its = dls.valid.show_batch(b, max_n=5, show=False)
    assert len(its) == 5 and all(isinstance(o[1], Category) for o in its)
    assert [int(o[1]) for o in its] == b[1][:5].tolist()
    assert 0 <= x.min() and x.max() <= 1 + 1e-5                                 # `Normalize` undone


def test_digits_reproducible():
    epochs = lambda d: [torch.cat([b[1] for b in d.train]) for _ in range(2)]
    e1,e2 = epochs(digits_dls(size=8, bs=32, seed=3)), epochs(digits_dls(size=8, bs=32, seed=3))
    assert all(torch.equal(a, b) for a,b in zip(e1, e2))
    assert not torch.equal(e1[0], e1[1])                                         # reshuffled each epoch
    assert not torch.equal(digits_dls(size=8, seed=4).valid_ds.tensors[1], digits_dls(size=8, seed=3).valid_ds.tensors[1])


@pytest.mark.parametrize('args,kw,msg', [
    ((linear_dls(), models.resnet18), {}, '`dls` must give image batches'), ((None, models.resnet18), {}, '`dls` must be fastai `DataLoaders`'),
    (('digits', 'resnet18'), {}, '`arch` must be a model constructor'), (('digits', None), {}, '`arch`'),
    (('digits', models.resnet18), dict(pretrained='yes'), '`pretrained`'),
    (('digits', models.resnet18), dict(n_in=1), '`n_in`=1')])
def test_create_cnn_bad_input(dls, args, kw, msg):
    args = tuple(dls if a == 'digits' else a for a in args)
    with pytest.raises((ValueError, TypeError), match=msg): create_cnn(*args, **kw)


def _no_network(monkeypatch):
    def boom(*a, **k): raise AssertionError("tried to reach the network")
    monkeypatch.setattr(socket.socket, 'connect', boom)
    monkeypatch.setattr(socket, 'create_connection', boom)


def test_pretrained_fails_fast(dls, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    _no_network(monkeypatch)
    t = time.perf_counter()
    with pytest.raises(ValueError, match='`pretrained=True`.*resnet34-b627a593.pth does not exist'):
        create_cnn(dls, models.resnet34, pretrained=True)
    assert time.perf_counter() - t < 3


def test_pretrained_from_cache(dls, tmp_path, monkeypatch):
    "Weights already in the cache are used, without the network"
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    _no_network(monkeypatch)
    torch.manual_seed(5)
    sd = models.resnet18().state_dict()
    fn = get_model_weights(models.resnet18).DEFAULT.url.rsplit('/', 1)[-1]
    (tmp_path/'checkpoints').mkdir()
    torch.save(sd, tmp_path/'checkpoints'/fn)
    learn = create_cnn(dls, models.resnet18, pretrained=True)
    assert torch.equal(learn.model[0][0].weight, sd['conv1.weight'])


class StopAfter(Callback):
    def __init__(self, n): self.n = n
    def after_batch(self):
        if self.training and self.iter+1 >= self.n: raise CancelFitException()


def test_scratch_matches_fastai_sgd():
    "ScratchSGD and fastai's SGD with momentum give bit-identical resnet18 weights (BatchNorm buffers included) after 3 batches"
    learners = []
    for cbs in ([EpochShuffle()], [ScratchSGD(), EpochShuffle()]):
        torch.manual_seed(0)
        l = create_cnn(digits_dls(size=32, bs=8), models.resnet18, metrics=error_rate, opt_func=partial(SGD, mom=0.9), cbs=cbs)
        m0 = copy.deepcopy(l.model)
        torch.manual_seed(1)  # the head's dropout masks
        with l.no_bar(), l.no_logging(): l.fit(1, 1e-2, cbs=StopAfter(3))
        learners.append(l)
    ref,scr = learners
    assert scr.model[0][1].num_batches_tracked.item() == 3
    assert not same_weights(m0, scr.model)
    assert same_weights(ref.model, scr.model), max_weight_diff(ref.model, scr.model)
