"LeanLearner: same events as fastai's Learner, cache invalidation, bit-identical weights; the bench CLI"
import subprocess, sys
import pytest, torch
from fastcore.basics import partial
from fastai.callback.core import Callback, CancelBatchException, CancelStepException, CancelFitException
from fastai.optimizer import SGD
from fastai.learner import Learner
from sgd_callbacks.data import *
from sgd_callbacks.scratch import mse
from sgd_callbacks.callback import *
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
    assert r.returncode != 0 and '`what` must be one of step, loop, vision, ddp' in (r.stdout + r.stderr)

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
