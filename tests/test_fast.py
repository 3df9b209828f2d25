"LeanLearner: same events as fastai's Learner, cache invalidation, bit-identical weights; the bench CLI"
import subprocess, sys
import pytest, torch
from fastcore.basics import partial
from fastai.callback.core import Callback, CancelBatchException, CancelStepException, CancelFitException
from fastai.optimizer import SGD
from fastai.learner import Learner
from sgd_callbacks.data import *
from sgd_callbacks.checks import *
from sgd_callbacks.seeding import *
from sgd_callbacks.loaders import *
from sgd_callbacks.events import *
from sgd_callbacks.scratch import mse
from sgd_callbacks.callback import *
from sgd_callbacks.divergence import *
from sgd_callbacks.weights import *
from sgd_callbacks.fast import *

class Rec(Callback):
    "Record every event this callback implements"
    def __init__(self, log, tag, order=0): self.log,self.tag,self.order = log,tag,order
    def before_batch(self): self.log.append(('before_batch', self.tag))
    def after_pred(self): self.log.append(('after_pred', self.tag))
    def after_step(self): self.log.append(('after_step', self.tag))
    def after_fit(self): self.log.append(('after_fit', self.tag))

def _fit(make, extra=(), epochs=2, bs=16, mom=0.9):
    log = []
    learn = make(linear_dls(bs=bs), LinearModel(), lr=0.05, mom=mom, cbs=[Rec(log, 'a', -5), Rec(log, 'b', 30), *extra])
    with learn.no_bar(), learn.no_logging(): learn.fit(epochs)
    return learn, log

def test_events_and_weights_match_stock():
    (ls,a),(ll,b) = _fit(scratch_learner),_fit(fast_learner)
    assert a == b and len(a) > 20
    assert same_weights(ls.model, ll.model)
    assert [float(v) for v in ls.recorder.losses] == [float(v) for v in ll.recorder.losses]

def test_instance_attribute_events_are_called():
    "`Callback(before_batch=f)` defines an event on the instance: it must run"
    seen = []
    learn,_ = _fit(fast_learner, extra=[Callback(before_batch=lambda self: seen.append(1))], epochs=1)
    assert len(seen) == 5 + 1 # 80 rows at bs=16, and one validation batch

@pytest.mark.parametrize('ex,ev', [(CancelBatchException,'after_pred'), (CancelStepException,'before_step'), (CancelFitException,'after_pred')])
def test_cancellations_match(ex, ev):
    def go(self):
        if self.training and self.iter == 1: raise ex()
    C = type('C', (Callback,), {'order': 3, ev: go})
    (ls,a),(ll,b) = _fit(scratch_learner, [C()]),_fit(fast_learner, [C()])
    assert a == b and same_weights(ls.model, ll.model)

def test_cache_follows_added_and_removed_cbs():
    learn = fast_learner(linear_dls(bs=16), LinearModel(), lr=0.05)
    n0 = len(learn.event_cbs('before_batch'))
    log = []
    with learn.added_cbs(Rec(log, 'x')):
        assert len(learn.event_cbs('before_batch')) == n0 + 1
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert len(learn.event_cbs('before_batch')) == n0 and log
    learn.cbs.append(Rec(log, 'y')); learn.cbs[-1].learn = learn # direct edits of `cbs` are seen too
    assert len(learn.event_cbs('before_batch')) == n0 + 1
    with pytest.raises(Exception, match='missing'): learn('before_nothing')

def test_fast_learner_matches_fastai_sgd_bs1():
    dls = linear_dls(bs=1)
    ref = Learner(linear_dls(bs=1), LinearModel(), loss_func=mse, lr=0.02, opt_func=partial(SGD, mom=0.9, wd=0.1), cbs=EpochShuffle())
    ll = fast_learner(dls, LinearModel(), lr=0.02, mom=0.9, wd=0.1)
    for l in (ref, ll):
        with l.no_bar(), l.no_logging(): l.fit(2)
    assert same_weights(ref.model, ll.model)
    assert ll.recorder.values == ref.recorder.values

def test_fast_learner_bad_args():
    with pytest.raises(ValueError, match='lr'): fast_learner(linear_dls(), LinearModel(), lr=-1.)
    with pytest.raises(TypeError, match='model'): fast_learner(linear_dls(), 'nope')

def test_bench_cli_bad_arg():
    r = subprocess.run([sys.executable, '-m', 'sgd_callbacks.bench', 'nope'], capture_output=True, text=True)
    from sgd_callbacks.bench import BENCHES
    assert r.returncode != 0 and f"`what` must be one of {', '.join(BENCHES)}, got 'nope'" in (r.stdout + r.stderr)

def test_lean_recorder_train_metrics_match():
    "With training metrics and a metric, the lean recorder keeps the same records as fastai's"
    res = []
    for make in (scratch_learner, fast_learner):
        learn = make(linear_dls(bs=8), LinearModel(), lr=0.05, metrics=mse)
        learn.recorder.train_metrics = True
        with learn.no_bar(), learn.no_logging(): learn.fit(2)
        res.append((learn.recorder.values, [float(v) for v in learn.recorder.losses], learn.recorder.lrs, float(learn.smooth_loss)))
    assert type(learn.recorder) is LeanRecorder
    assert res[0] == res[1]

# Each lean piece alone, against the stock piece it replaces

from fastai.callback.core import TrainEvalCallback, CancelTrainException, CancelValidException
from fastai.learner import Recorder, CastToTensor
from fastai.torch_core import TensorBase
from fastai.callback.training import GradientAccumulation, GradientClip
import fastai.callback.schedule
from sgd_callbacks.fast import LeanTrainEval, LeanCastToTensor

class Probe(Callback):
    "Log what a callback can see at each event it implements: the counters, the batch's type, and a draw from torch's generator"
    def __init__(self, log, order=0, run_valid=True): self.log,self.order,self.run_valid = log,order,run_valid
    def _see(self, e):
        l = self.learn
        self.log.append((e, l.training, l.model.training, l.epoch, l.iter, l.train_iter, l.pct_train, type(l.xb[0]).__name__, torch.is_grad_enabled(), torch.randint(1<<30, ()).item()))
    def before_batch(self): self._see('before_batch')
    def after_pred(self): self._see('after_pred')
    def after_batch(self): self._see('after_batch')
    def after_cancel_batch(self): self._see('after_cancel_batch')
    def after_cancel_train(self): self.log.append('after_cancel_train')
    def after_cancel_validate(self): self.log.append('after_cancel_validate')
    def after_epoch(self): self.log.append(('after_epoch', self.learn.__dict__.get('final_record'), list(self.learn.recorder.log)))

class Cancels(Callback):
    "Cancel the 2nd batch of epoch 0, training at the 3rd batch of epoch 1, validation in epoch 2; and accumulate once more into the smooth loss"
    order = 55 # after the recorder
    def before_batch(self):
        if self.training and self.epoch == 1 and self.iter == 2: raise CancelTrainException()
        if not self.training and self.epoch == 2: raise CancelValidException()
    def after_pred(self):
        if self.training and self.epoch == 0 and self.iter == 1: raise CancelBatchException()
    def after_batch(self): # the smooth loss changes after the recorder took its value
        if self.training and self.epoch == 0 and self.iter == self.n_iter-1: self.learn.recorder.smooth_loss.accumulate(self.learn)

def _records(learn):
    r = learn.recorder
    return (r.values, [float(v) for v in r.losses], r.lrs, r.iters, list(r.metric_names), list(r.log), learn.final_record, float(learn.smooth_loss))

def _piece_run(swap, cancels, sub):
    "`scratch_learner` (a stock `Learner`) with only the piece `swap` lean; its records, weights and event log"
    from sgd_callbacks.scratch import mse
    log,dls = [],linear_dls(bs=16)
    if sub: # batches of a tensor subclass: `CastToTensor` has work to do
        for dl in dls.loaders: dl.dataset.tensors = tuple(t.as_subclass(TensorBase) for t in dl.dataset.tensors)
    cbs = [Probe(log, -20), Probe(log, 60, run_valid=False)] + ([Cancels()] if cancels else [])
    learn = scratch_learner(dls, LinearModel(), lr=0.05, mom=0.9, metrics=mse, cbs=cbs, cls=LeanLearner if swap == 'learner' else Learner)
    learn.recorder.train_metrics = True
    for cb in learn.cbs:
        if type(cb) is swap: object.__setattr__(cb, '__class__', _SWAPS[swap])
    a0 = learn.model.a.detach().clone()
    with learn.no_bar(), learn.no_logging(): learn.fit(3)
    assert not torch.equal(learn.model.a, a0) # the weights moved
    return learn, log

_SWAPS = {Recorder: LeanRecorder, TrainEvalCallback: LeanTrainEval, CastToTensor: LeanCastToTensor}

@pytest.mark.parametrize('swap', ['learner', *_SWAPS])
@pytest.mark.parametrize('cancels,sub', [(False, False), (True, True)])
def test_each_lean_piece_matches_stock(swap, cancels, sub):
    "Each lean piece alone: the same records, the same events seen the same way, bit-identical weights (`torch.equal`)"
    (ls,a),(ll,b) = _piece_run(None, cancels, sub),_piece_run(swap, cancels, sub)
    assert swap == 'learner' and type(ll) is LeanLearner or any(type(cb) is _SWAPS[swap] for cb in ll.cbs)
    assert a == b and len(a) > 40
    assert same_weights(ls.model, ll.model)
    assert _records(ls) == _records(ll)

def _stock_pair(go, **kw):
    "Run `go(learn)` on `scratch_learner` and on `fast_learner`; their records and weights"
    res = []
    for make in (scratch_learner, fast_learner):
        learn = make(linear_dls(bs=16), LinearModel(), lr=0.05, **kw)
        with learn.no_bar(), learn.no_logging(): out = go(learn)
        res.append((learn, out))
    (ls,os_),(lf,of) = res
    assert same_weights(ls.model, lf.model)
    assert [float(v) for v in ls.recorder.losses] == [float(v) for v in lf.recorder.losses] and ls.recorder.lrs == lf.recorder.lrs
    assert ls.recorder.values == lf.recorder.values
    return (ls,os_),(lf,of)

def test_fit_one_cycle_and_gradient_callbacks_work():
    "fastai's schedules, gradient accumulation and clipping drive fast_learner's step as a stock Learner's"
    from sgd_callbacks.scratch import mse
    (ls,_),(lf,_) = _stock_pair(lambda l: l.fit_one_cycle(3), mom=0.9, metrics=mse, cbs=[GradientAccumulation(n_acc=32), GradientClip(0.5)])
    assert len(set(lf.recorder.lrs)) > 10 and not torch.equal(lf.model.a, LinearModel().a) # scheduled, and moved

def test_lr_find_works(tmp_path):
    def go(l):
        l.path = tmp_path
        return l.lr_find(num_it=20, show_plot=False)
    (ls,rs),(lf,rf) = _stock_pair(go)
    assert rs == rf and len(lf.recorder.lrs) > 5

def test_errors_and_gates_as_fastai():
    "An error names its callback and event as `Callback.__call__` does; `run=False` skips until `after_fit` resets it"
    class Boom(Callback):
        def after_pred(self):
            if self.training and self.iter == 1: raise ValueError('boom')
    msgs = []
    for make in (scratch_learner, fast_learner):
        learn = make(linear_dls(bs=16), LinearModel(), lr=0.05, cbs=Boom())
        with pytest.raises(ValueError) as e, learn.no_bar(), learn.no_logging(): learn.fit(1)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1] and 'Boom' in msgs[1] and 'after_pred' in msgs[1]
    logs = []
    for make in (scratch_learner, fast_learner):
        log = []; p = Probe(log); p.run = False
        learn = make(linear_dls(bs=16), LinearModel(), lr=0.05, cbs=p)
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
        assert p.run is True and log == [] # skipped, then re-enabled by `after_fit`
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
        logs.append(log)
    assert logs[0] == logs[1] and len(logs[1]) > 10

def test_instance_event_added_between_fits_is_seen():
    "Plans kept across fits are keyed by each callback's own events: one added later is called"
    log = []; p = Probe(log)
    learn = fast_learner(linear_dls(bs=16), LinearModel(), lr=0.05, cbs=p)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    p.before_step = lambda: log.append('step')
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert log.count('step') == 5

def test_validate_before_fit():
    learn = fast_learner(linear_dls(bs=16), LinearModel(), lr=0.05)
    ref = scratch_learner(linear_dls(bs=16), LinearModel(), lr=0.05)
    assert learn.validate() == ref.validate()
