"""How sure the bake-off is, on planted cases: an optimizer and its twins (the same entry under other names) are never
told apart; SGD tuned over a range 100× too small is, as the slower; planted times give their exact p-values, the
level the winners line says, and the repeats the power estimate asks for; the bootstrap aggregates and scores a
resample as the run does; every estimate lies in its interval; one repeat gives none; the expected best of k trials
starts at the mean (diverged trials as the worst) and never gets worse; the report's CSVs and page hold it all; all of
it bit for bit on a rerun, from the CSVs, and on 2 Dask workers."""
import io, html, math
from contextlib import redirect_stdout
from types import SimpleNamespace
import numpy as np, pandas as pd, pytest
from fastai.optimizer import SGD, Adam
from sgd_callbacks.bakeoff.problems import Problem, BAKEOFF_PROBLEMS
from sgd_callbacks.bakeoff.run import bakeoff, OptEntry, BakeoffResult
import sgd_callbacks.bakeoff.report # `BakeoffResult.save`
from sgd_callbacks.bakeoff.score import performance_profile
from sgd_callbacks.bakeoff.stats import bakeoff_stats, expected_best, win_levels, boot_times, repeat_times

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

def test_the_bootstrap_aggregates_a_resample_as_the_score_does():
    "deepobs: the lower median of a resample of the seeds; algoperf: numpy's median of a resample of the studies"
    from scipy.stats import binom
    t = {('p', 'o'): np.array([1., 2., 3., 4.])}
    lower,median = (boot_times(t, k, n_boot=20000)['p', 'o'] for k in ('deepobs', 'algoperf'))
    assert set(lower) == {1., 2., 3., 4.} and {1.5, 2.5, 3.5} <= set(median)
    # the lower median of 4 draws is 1 when 2 or more of them are 1, numpy's median when 3 or more are
    assert abs((lower == 1).mean() - binom.sf(1, 4, 0.25)) < 0.01
    assert abs((median == 1).mean() - binom.sf(2, 4, 0.25)) < 0.01

def test_a_score_interval_holds_the_scores_of_the_resampled_tables(planted):
    "Each resample's times, scored by the run's own `performance_profile`: the interval is their 2.5th and 97.5th"
    n = 200
    draws,s = boot_times(repeat_times(planted.trials), 'deepobs', n),planted.stats(n_boot=n)
    sc = np.array([performance_profile(pd.DataFrame([dict(problem=p, optimizer=o, steps_to_target=d[b])
                                                     for (p,o),d in draws.items()]))[1].set_index('optimizer').score
                   .reindex(planted._opts()).values for b in range(n)])
    got = s.scores.set_index('optimizer').reindex(planted._opts())
    lo,hi = np.quantile(sc, 0.025, axis=0, method='lower'),np.quantile(sc, 0.975, axis=0, method='higher')
    np.testing.assert_allclose(got.score_lo, np.minimum(lo, got.score), atol=1e-12)
    np.testing.assert_allclose(got.score_hi, np.maximum(hi, got.score), atol=1e-12)
    assert (got.score_lo < got.score_hi).any()

def test_one_repeat_gives_no_interval():
    r = run([tiny()], {'sgd': SGD, 'adam': Adam}, seeds=1)
    s = r.stats()
    with pytest.raises(ValueError, match='one repeat gives no band'): r.plot_bands()
    assert s.times.lo.isna().all() and s.times.hi.isna().all() and (s.times.note == 'one repeat: no interval').all()
    assert s.scores.score_lo.isna().all() and (s.scores.note == 'one repeat: no interval').all() and len(s.profile_band) == 0
    assert s.pairs.ratio_lo.isna().all() and not s.pairs.significant.any()

def test_expected_best_starts_at_the_mean_and_never_gets_worse(studies):
    b = studies.stats().budget
    assert b is not None and len(b)
    diverged = 0
    for (p,o),g in b.groupby(['problem', 'optimizer']):
        tr = studies.trials[(studies.trials.problem == p) & (studies.trials.optimizer == o)]
        assert g.trials.iloc[0] == len(tr) == 12 and list(g.k) == list(range(1, 13))
        # a diverged trial enters as the worst final metric any trial on its problem finished with
        fin = studies.trials[studies.trials.problem == p].final_metric.dropna()
        m = tr.final_metric.fillna(fin.min() if studies.problems[p].higher else fin.max())
        np.testing.assert_allclose(g.expected_metric.iloc[0], m.mean(), rtol=1e-12)
        diverged += tr.final_metric.isna().sum()
        d = np.diff(g.expected_metric.values)
        assert (d >= -1e-12).all() if studies.problems[p].higher else (d <= 1e-12).all()
        assert (np.diff(g.reach.values) >= 0).all()
    assert diverged > 0 # the case is met
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 9):
        v = rng.normal(size=n)
        draws = v[rng.integers(0, n, size=(20000, n))] # Monte Carlo of the best of k=n draws with replacement
        for higher,best,sign in ((False, draws.min(1), -1), (True, draws.max(1), 1)):
            e = expected_best(v, higher)
            np.testing.assert_allclose(e[0], v.mean(), rtol=1e-12); assert (sign*np.diff(e) >= -1e-12).all()
            np.testing.assert_allclose(e[-1], best.mean(), atol=0.03)

@pytest.fixture(scope='module')
def saved(planted, studies, tmp_path_factory):
    "Both runs written out: `{protocol: (run, folder)}`"
    d = tmp_path_factory.mktemp('stats')
    for r in (planted, studies): r.save(d/r.meta['protocol'])
    return {r.meta['protocol']: (r, d/r.meta['protocol']) for r in (planted, studies)}

def test_bit_for_bit_on_a_rerun_and_from_the_csvs(saved):
    again = {'deepobs': lambda: run(PBS(), TWINS), 'algoperf': lambda: run(PBS(), {'sgd': SGD, 'adam': Adam}, **ALGOPERF)}
    for r,d in saved.values():
        m = r.meta
        same(r.stats(), again[m['protocol']]().stats())
        res,tri = (pd.read_csv(d/f'{k}.csv') for k in ('results', 'trials'))
        same(r.stats(), bakeoff_stats(res, tri, m['protocol'], m['time'], m['tau_max'], m['reference'],
                                      {p: pb.higher for p,pb in r.problems.items()}))

def test_the_report_holds_the_statistics(saved):
    """scores.csv with each score's interval; intervals, pairs, decide (and, for algoperf, budget) as CSVs; the page:
    the winners line, the repeats that decide, a matrix of pairs per problem (and the budget's picture)"""
    for r,d in saved.values():
        st = r.stats()
        sc = pd.read_csv(d/'scores.csv')
        assert list(sc.columns[-3:]) == ['score_lo', 'score_hi', 'note'] and len(sc) == len(r.scores)
        assert ((sc.score_lo <= sc.score) & (sc.score <= sc.score_hi)).all()
        for k,df in dict(intervals=st.times, pairs=st.pairs, decide=st.decide, budget=st.budget).items():
            if df is None: assert not (d/f'{k}.csv').exists(); continue
            back = pd.read_csv(d/f'{k}.csv')
            assert list(back.columns) == list(df.columns) and len(back) == len(df) > 0, k
            for c in df.select_dtypes('number'): np.testing.assert_array_equal(back[c], df[c], err_msg=f'{k}.{c}')
        page = (d/'index.html').read_text()
        assert html.escape(r.winners_line()) in page and 'repeats that decide' in page
        for p in r.problems: # the matrix: every optimizer a column, every pair's p in a cell
            i = page.index(f'<h3>{p}</h3>'); m = page[i:page.index('</table>', i)]
            n = len(r._opts())
            assert all(f'<th>{o}</th>' in m for o in r._opts()) and m.count(' p=') == n*(n-1), p
        assert ('alt="budget"' in page) == (d/'budget.png').exists() == (r.meta['protocol'] == 'algoperf')
        assert 'alt="profile_bands"' in page and (d/'profile_bands.png').exists()

def test_each_band_has_a_panel_titled_with_its_interval(planted):
    import matplotlib.pyplot as plt
    fig,sc = planted.plot_bands(),planted.stats().scores
    assert [a.get_title() for a in fig.axes] == [f"{o}: {s:.2f} ({lo:.2f}–{hi:.2f})"
                                                 for o,s,lo,hi in zip(sc.optimizer, sc.score, sc.score_lo, sc.score_hi)]
    band = planted.stats().profile_band
    for a,o in zip(fig.axes, sc.optimizer): # its band's edges, as the bootstrap gives them
        b = band[band.optimizer == o]
        (v,) = [c.get_paths()[0].vertices for c in a.collections]
        assert np.isclose(v[:, 1].min(), b.lo.min()) and np.isclose(v[:, 1].max(), b.hi.max()), o
    plt.close(fig)

@pytest.mark.xdist_group('bakeoff_dask')
def test_bit_for_bit_on_two_dask_workers():
    pytest.importorskip('distributed')
    kw = dict(protocol='algoperf', trials=3, studies=3)
    serial = run([tiny()], {'sgd': SGD, 'adam': Adam}, **kw)
    with redirect_stdout(io.StringIO()): dask = bakeoff([tiny()], {'sgd': SGD, 'adam': Adam}, workers=2, **{**KW, **kw})
    assert dask.meta['workers'] == 2
    same(serial.stats(), dask.stats())

def from_tables(times:dict):
    """A deepobs run of one problem `p` made from its tables alone: `times` is `{optimizer: each seed's steps to
    target}` (None: never reached)"""
    tr = pd.DataFrame([dict(problem='p', optimizer=o, stage='seed', seed=s, steps_to_target=t)
                       for o,ts in times.items() for s,t in enumerate(ts, 1)]).astype({'steps_to_target': 'Int64'})
    lm = lambda ts: sorted(math.inf if t is None else t for t in ts)[(len(ts)-1)//2] # deepobs' lower median
    res = pd.DataFrame([dict(problem='p', optimizer=o, steps_to_target=lm(ts), final_loss=0.)
                        for o,ts in times.items()])
    res = res.replace(math.inf, float('nan'))
    meta = dict(protocol='deepobs', time='steps', tau_max=4., reference=None)
    return BakeoffResult(res, tr, None, None, {}, {'p': SimpleNamespace(higher=False)}, meta)

@pytest.mark.parametrize('seeds,rivals,p_holm,said', [
    (8, 1, 2/12870, 'significant, p ≤ 0.001'),       # 8 against 8, every repeat apart: 2 arrangements in C(16, 8)
    (6, 2, 3*2/924, 'significant, p ≤ 0.01'),        # Holm's first step multiplies by the 3 pairs
    (4, 1, 2/70, 'significant, p ≤ 0.05'),
    (3, 1, 2/20, 'not significant: p 0.1 against slow')]) # 3 against 3 can never reach 0.05
def test_a_win_is_called_at_the_level_its_repeats_reach(seeds, rivals, p_holm, said):
    "Planted times, every repeat putting one optimizer ahead: its exact p, Holm's, and the level the winners line says"
    times = dict(fast=list(range(10, 10+seeds)), slow=[None]*seeds)
    if rivals == 2: times['mid'] = list(range(30, 30+seeds))
    r = from_tables(times)
    pr = r.stats().pairs.set_index(['a', 'b'])
    assert pr.p_holm['fast', 'slow'] == pytest.approx(p_holm, rel=1e-12) and pr.faster['fast', 'slow'] == 'fast'
    head = f"winners over {seeds} seeds (rank tests, Holm's correction per problem)"
    assert r.winners_line() == f"{head}: p fast ({said})"

def test_a_twin_of_the_winner_makes_its_win_not_significant():
    r = from_tables(dict(fast=[10, 11, 12, 13, 14, 15], twin=[15, 14, 13, 12, 11, 10], slow=[None]*6))
    assert r.winners_line().endswith("p fast (not significant: p 1 against twin)")

def test_the_repeats_the_power_estimate_asks_for_decide():
    "3 seeds that all put `fast` ahead cannot decide; as many seeds as the power estimate asks for, the same gap, do"
    def decide(n):
        return from_tables(dict(fast=list(range(10, 10+n)), slow=list(range(50, 50+n)))).stats().decide.iloc[0]
    d = decide(3)
    assert (d['first'], d.second, d.repeats, d.enough) == ('fast', 'slow', 3, False) and d.more == d.needed - 3 > 0
    assert d.needed == 6 # Noether: ⌈(1.96+0.84)²/(6·0.5²)⌉ for a gap every repeat shows
    e = decide(int(d.needed))
    assert e.enough and e.more == 0 and e.p_holm <= 0.05
