"""How sure the bake-off is, on planted cases: an optimizer and its twins (the same entry under other names) are never
told apart; SGD tuned over a range 100× too small is, as the slower; every estimate lies in its interval; one repeat
gives none; the expected best of k trials starts at the mean and never gets worse; all of it bit for bit on a rerun,
from the CSVs, and on 2 Dask workers."""
import io
from contextlib import redirect_stdout
import numpy as np, pandas as pd, pytest
from fastai.optimizer import SGD, Adam
from sgd_callbacks.bakeoff.problems import Problem, BAKEOFF_PROBLEMS
from sgd_callbacks.bakeoff.run import bakeoff, OptEntry
import sgd_callbacks.bakeoff.report # `BakeoffResult.save`
from sgd_callbacks.bakeoff.stats import bakeoff_stats, expected_best, win_levels

def tiny(name='line', steps=40, lrs=(1e-2, 3.)):
    pb = BAKEOFF_PROBLEMS[name]
    return Problem(name, pb.dls_fn, pb.model_fn, pb.loss_func, pb.target, pb.metric, pb.metric_name, pb.higher,
                   steps=steps, lrs=lrs, every=2)

PBS = lambda: [tiny(), tiny('quadratic', steps=150)]
TWINS = {'sgd': SGD, 'sgd2': SGD, 'sgd3': SGD, 'adam': Adam, 'adam2': Adam, 'small': OptEntry(SGD, lr_mult=0.01)}
KW = dict(trials=3, seeds=6, progress=False, schedule='constant')
ALGOPERF = dict(protocol='algoperf', trials=4, studies=3)
TABLES = ('times', 'scores', 'profile_band', 'pairs', 'decide')

def run(pbs, opts, **kw):
    with redirect_stdout(io.StringIO()): return bakeoff(pbs, opts, **{**KW, **kw})

@pytest.fixture(scope='module')
def planted(): return run(PBS(), TWINS)

@pytest.fixture(scope='module')
def studies(): return run(PBS(), {'sgd': SGD, 'adam': Adam}, **ALGOPERF)

def same(s1, s2):
    "Every table of two `bakeoff_stats`, equal to the last bit (NaN equal to NaN)"
    for k in TABLES: pd.testing.assert_frame_equal(getattr(s1, k), getattr(s2, k), check_exact=True)
    assert (s1.budget is None) == (s2.budget is None)
    if s1.budget is not None: pd.testing.assert_frame_equal(s1.budget, s2.budget, check_exact=True)

def test_twins_never_significant(planted):
    pr = planted.stats().pairs
    twins = [('sgd', 'sgd2'), ('sgd', 'sgd3'), ('sgd2', 'sgd3'), ('adam', 'adam2')]
    got = pr[[(a, b) in twins for a,b in zip(pr.a, pr.b)]]
    assert len(got) == 2*len(twins) and set(got.problem) == {'line', 'quadratic'}
    assert not got.significant.any(), got

def test_handicapped_twin_significant_and_slower(planted):
    pr = planted.stats().pairs
    got = pr[(pr.b == 'small') & pr.a.str.startswith('sgd') & (pr.problem == 'line')]
    assert len(got) == 3 and got.significant.all() and (got.faster == got.a).all(), got
    wl = win_levels(planted.stats(), {'line': 'sgd'})['line'] # sgd's win is not significant: its twins tie it
    assert wl[1] is None and wl[3] in ('sgd2', 'sgd3')

def test_estimates_match_the_run_and_lie_in_their_intervals(planted, studies):
    for r in (planted, studies):
        s = r.stats()
        t = r.results.steps_to_target.astype(float).fillna(np.inf).values
        np.testing.assert_array_equal(s.times.time.values, t) # the same aggregate as the run's
        assert ((s.times.lo <= s.times.time) & (s.times.time <= s.times.hi)).all()
        sc = s.scores.set_index('optimizer').reindex(r.scores.optimizer)
        np.testing.assert_allclose(sc.score.values, r.scores.score.values, rtol=0, atol=1e-12)
        assert ((sc.score_lo <= sc.score) & (sc.score <= sc.score_hi)).all() and (sc.score_lo < sc.score_hi).any()
        ok = s.pairs.ratio.notna()
        assert ((s.pairs.ratio_lo <= s.pairs.ratio) & (s.pairs.ratio <= s.pairs.ratio_hi))[ok].all()

def test_one_repeat_gives_no_interval():
    s = run([tiny()], {'sgd': SGD, 'adam': Adam}, seeds=1).stats()
    assert s.times.lo.isna().all() and s.times.hi.isna().all() and (s.times.note == 'one repeat: no interval').all()
    assert s.scores.score_lo.isna().all() and (s.scores.note == 'one repeat: no interval').all() and len(s.profile_band) == 0
    assert s.pairs.ratio_lo.isna().all() and not s.pairs.significant.any()

def test_expected_best_starts_at_the_mean_and_never_gets_worse(studies):
    b = studies.stats().budget
    assert b is not None and len(b)
    for (p,o),g in b.groupby(['problem', 'optimizer']):
        tr = studies.trials[(studies.trials.problem == p) & (studies.trials.optimizer == o)]
        assert g.trials.iloc[0] == len(tr) == 12 and list(g.k) == list(range(1, 13))
        if tr.final_metric.notna().all(): np.testing.assert_allclose(g.expected_metric.iloc[0], tr.final_metric.mean(), rtol=1e-12)
        d = np.diff(g.expected_metric.values)
        assert (d >= -1e-12).all() if studies.problems[p].higher else (d <= 1e-12).all()
        assert (np.diff(g.reach.values) >= 0).all()
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 9):
        v = rng.normal(size=n)
        draws = v[rng.integers(0, n, size=(20000, n))] # Monte Carlo of the best of k=n draws with replacement
        for higher,best,sign in ((False, draws.min(1), -1), (True, draws.max(1), 1)):
            e = expected_best(v, higher)
            np.testing.assert_allclose(e[0], v.mean(), rtol=1e-12); assert (sign*np.diff(e) >= -1e-12).all()
            np.testing.assert_allclose(e[-1], best.mean(), atol=0.03)

def test_bit_for_bit_on_a_rerun_and_from_the_csvs(planted, studies, tmp_path):
    again = {'deepobs': lambda: run(PBS(), TWINS), 'algoperf': lambda: run(PBS(), {'sgd': SGD, 'adam': Adam}, **ALGOPERF)}
    for r in (planted, studies):
        m = r.meta
        same(r.stats(), again[m['protocol']]().stats())
        r.save(tmp_path/m['protocol'])
        res,tri = (pd.read_csv(tmp_path/m['protocol']/f'{k}.csv') for k in ('results', 'trials'))
        same(r.stats(), bakeoff_stats(res, tri, m['protocol'], m['time'], m['tau_max'], m['reference'],
                                      {p: pb.higher for p,pb in r.problems.items()}))

@pytest.mark.xdist_group('bakeoff_dask')
def test_bit_for_bit_on_two_dask_workers():
    pytest.importorskip('distributed')
    kw = dict(protocol='algoperf', trials=3, studies=3)
    serial = run([tiny()], {'sgd': SGD, 'adam': Adam}, **kw)
    with redirect_stdout(io.StringIO()): dask = bakeoff([tiny()], {'sgd': SGD, 'adam': Adam}, workers=2, **{**KW, **kw})
    assert dask.meta['workers'] == 2
    same(serial.stats(), dask.stats())
