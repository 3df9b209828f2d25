"""Exact runs: with `EpochShuffle(seed)` every random draw of epoch e (the loader's shuffle, dropout, augmentation) comes
from (seed, e), so two fits are bit-identical, a run resumed from a checkpoint (saved by hand, or by fastai's
`SaveModelCallback` before the run was killed mid-epoch) ends bit-identical to the uninterrupted one, and the caller's
global generators are the same before and after a fit. On four learners: the lesson's, a resnet18 with dropout on the
digits, a resnet18 with fastai's augmentation on an `ImageDataLoaders` folder, and a `tabular_learner` with dropout."""
import random, numpy as np, pytest, torch
from functools import partial
from PIL import Image
from fastcore.foundation import L
from fastai.torch_core import set_seed, get_random_states
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.tracker import SaveModelCallback
from fastai.data.core import DataLoaders
from fastai.optimizer import SGD
from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, models
from fastai.tabular.all import TabularDataLoaders, Categorify, Normalize, tabular_learner, tabular_config
from sgd_callbacks.all import (EpochShuffle, ScratchSGD, scratch_learner, linear_dls, LinearModel, digits_dls, create_cnn,
                               same_weights, max_weight_diff)
from sgd_callbacks.vision import ImageTensors

SEED = 7

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "One torch thread: on a few shared cores, two threads that wait for each other make these fits several times slower"
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def small_digits(n_train=128, n_valid=64):
    "`digits_dls(size=16, bs=64)` cut to two training batches and one small validation batch"
    dls = digits_dls(size=16, bs=64)
    def cut(dl, n): return dl.new(ImageTensors(*(t[:n] for t in dl.dataset.tensors), dl.dataset.vocab))
    return DataLoaders(cut(dls.train, n_train), cut(dls.valid, n_valid))

@pytest.fixture(scope='session')
def png_folder(tmp_path_factory):
    "3 classes × 20 of scikit-learn's 8×8 digits as PNG files, one folder per class"
    from sklearn.datasets import load_digits
    x,y = load_digits(return_X_y=True)
    root = tmp_path_factory.mktemp('digits_png')
    for c in (0, 1, 2):
        (root/str(c)).mkdir()
        for i,img in enumerate(x[y == c][:20]):
            Image.fromarray((img.reshape(8, 8)*15.9375).astype(np.uint8)).save(root/str(c)/f'{i}.png')
    return root

def lesson(path, cbs, folder=None):
    return scratch_learner(linear_dls(bs=10), LinearModel(), lr=0.1, mom=0.9, cbs=cbs, path=path)

def digits_cnn(path, cbs, folder=None):
    return create_cnn(small_digits(), models.resnet18, pretrained=False, lr=0.1, opt_func=partial(SGD, mom=0.9),
                      cbs=[ScratchSGD()]+cbs, path=path) # the head's dropout has fastai's default ps

def folder_cnn(path, cbs, folder=None):
    dls = ImageDataLoaders.from_folder(folder, valid_pct=0.2, seed=42, item_tfms=Resize(32), num_workers=0, bs=16,
                                       batch_tfms=aug_transforms(size=32, min_scale=0.75))
    return create_cnn(dls, models.resnet18, pretrained=False, lr=0.05, opt_func=partial(SGD, mom=0.9), cbs=[ScratchSGD()]+cbs,
                      path=path)

def tabular(path, cbs, folder=None):
    from sklearn.datasets import load_diabetes
    df = load_diabetes(as_frame=True).frame
    df['sex'] = np.where(df.sex > 0, 'a', 'b')
    dls = TabularDataLoaders.from_df(df, procs=[Categorify, Normalize], cat_names=['sex'], y_names='target', bs=64,
                                     valid_idx=list(range(len(df)-88, len(df))), num_workers=0) # a split fixed by the data
    return tabular_learner(dls, layers=[32], config=tabular_config(ps=[0.5], embed_p=0.1), lr=1e-2, cbs=cbs, path=path)

MAKERS = [lesson, digits_cnn, folder_cnn, tabular]

def build(make, path, folder, cbs=None, seed=0, shuffle=EpochShuffle):
    "A learner built after `set_seed(seed)`, with `EpochShuffle(SEED)` (or `shuffle`) in its callbacks"
    set_seed(seed)
    return make(path, [shuffle(SEED) if shuffle is EpochShuffle else shuffle()] + L(cbs), folder)

def fit(learn, n=3, **kw):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(n, **kw)
    return learn

class StopAfter(Callback):
    "End the fit after `n` epochs, as if it had been asked for `n`"
    def __init__(self, n): self.n = n
    def after_epoch(self):
        if self.epoch+1 == self.n: raise CancelFitException()

class Kill(Callback):
    "An error in the middle of epoch `epoch` (the process dies there)"
    def __init__(self, epoch): self.k = epoch
    def after_batch(self):
        if self.training and self.epoch == self.k and self.iter == 1: raise RuntimeError('killed')

@pytest.fixture(scope='module', params=MAKERS, ids=lambda m: m.__name__)
def whole(request, tmp_path_factory, png_folder):
    "The uninterrupted `fit_one_cycle(3)` of each learner"
    make,path = request.param,tmp_path_factory.mktemp(request.param.__name__)
    return make, path, fit(build(make, path, png_folder))

def disturb(k=1):
    "Draw from every global generator, as a session does between building and fitting"
    torch.rand(k); np.random.rand(k); random.random()

def test_two_fits_bit_identical(whole, png_folder):
    make,path,ref = whole
    other = build(make, path, png_folder)
    disturb(5) # what the session draws after building no longer matters
    fit(other)
    assert same_weights(ref.model, other.model)
    assert not same_weights(ref.model, build(make, path, png_folder).model) # it trained

def test_resume_bit_identical(whole, png_folder):
    make,path,ref = whole
    first = fit(build(make, path, png_folder), cbs=StopAfter(2))
    first.save('half', with_opt=True)
    second = build(make, path, png_folder, seed=1).load('half', with_opt=True) # fresh loaders and a model built otherwise
    disturb(3)
    fit(second, start_epoch=2)
    assert same_weights(ref.model, second.model)

def test_killed_run_resumed_from_checkpoint(whole, png_folder):
    make,path,ref = whole
    run = build(make, path, png_folder)
    with run.no_bar(), run.no_logging(), pytest.raises(RuntimeError, match='killed'):
        run.fit_one_cycle(3, cbs=[SaveModelCallback(every_epoch=True, with_opt=True, fname='ckpt'), Kill(2)])
    assert (path/'models'/'ckpt_1.pth').exists() and not (path/'models'/'ckpt_2.pth').exists()
    back = build(make, path, png_folder, seed=2).load('ckpt_1', with_opt=True)
    fit(back, start_epoch=2)
    assert same_weights(ref.model, back.model)

def states():
    st = get_random_states()
    return random.getstate(), np.random.get_state()[1].copy(), st['torch_state']

def same_states(a, b): return a[0] == b[0] and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])

@pytest.mark.parametrize('make', MAKERS, ids=lambda m: m.__name__)
def test_caller_generators_untouched(make, tmp_path, png_folder):
    learn = build(make, tmp_path, png_folder)
    random.seed(3); np.random.seed(3); torch.manual_seed(3)
    st = states()
    fit(learn, 1)
    assert same_states(st, states())
    with learn.no_bar(), learn.no_logging(), pytest.raises(RuntimeError, match='killed'): learn.fit(2, cbs=Kill(1))
    assert same_states(st, states())
    assert '_with_events' not in vars(learn) # the learner is as it was
    learn.validate() # outside a fit, validation does not reseed the caller's generators
    assert same_states(st, states())

class SetEpochOnly(Callback):
    "`EpochShuffle` as it was: positions the package's loaders, seeds nothing"
    order = -50
    def before_train(self):
        if hasattr(self.dl, 'set_epoch'): self.dl.set_epoch(self.epoch)

def test_resume_differs_without_seeding_each_epoch(tmp_path):
    "The resnet's dropout draws from the global generator: without a seed per epoch the resumed run differs"
    mk = lambda seed=0: build(digits_cnn, tmp_path, None, seed=seed, shuffle=SetEpochOnly)
    set_seed(0); ref = fit(mk())
    set_seed(0); first = fit(mk(), cbs=StopAfter(2))
    first.save('half', with_opt=True)
    second = mk(1).load('half', with_opt=True)
    fit(second, start_epoch=2)
    assert not same_weights(ref.model, second.model) and max_weight_diff(ref.model, second.model) > 1e-4

# pytest-xdist (pyproject.toml): this file's tests on one worker, so its module fixtures are built once
pytestmark = pytest.mark.xdist_group('repro')
