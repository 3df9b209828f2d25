"""The bake-off's edges: AlgoPerf's scoring where the reference never solves a problem, with `tau_max` above 4 and
with a best time of 0 (each computed by the package and by AlgoPerf's code written out here), a median over two studies
that falls on a half step, the study a result reports, the β a configuration passes, and the command's Dask address."""
import io, math
from types import SimpleNamespace
import numpy as np, pandas as pd, pytest
from fastcore.basics import partial
from fastai.optimizer import SGD, Adam
from sgd_callbacks.all import *
from sgd_callbacks.bakeoff import run as bakeoff_module
from sgd_callbacks.bakeoff.run import opt_kwargs
from sgd_callbacks.bakeoff.score import performance_profile, lower_median, CUT
from sgd_callbacks.cli import run_bakeoff

# ---- AlgoPerf's scoring, written out from `scoring/performance_profile.py` (mlcommons/algorithmic-efficiency):
# `compute_performance_profiles` once the times to target are known, then `compute_leaderboard_score(normalize=True)`

def algoperf(times:dict, max_tau=4., reference=None, num_points=100):
    "`times` {optimizer: {problem: time or None}}: AlgoPerf's {optimizer: score} and {optimizer: ρ at max_tau}"
    df = pd.DataFrame(times).T.astype(float).fillna(np.inf)     # rows: submissions, columns: workloads
    best_scores = df.min(axis=0)
    df[df.apply(lambda x: x > 4*best_scores, axis=1)] = np.inf  # the 4× cut: 4, whatever max_tau is
    if reference is None: df.update(df.div(df.min(axis=0), axis=1))
    else: df.update(df.div(df.loc[reference, :], axis=1))      # `update` skips NaN (0/0, ∞/∞): the time stays
    points = np.linspace(1., max_tau, num=num_points)
    perf = pd.concat([(df <= tau).sum(axis=1)/df.shape[1] for tau in points], axis=1)
    scores = np.trapezoid(perf.values, x=points, axis=1)/(points.max() - points.min())
    return dict(zip(df.index, scores)), dict(zip(df.index, perf.iloc[:, -1])), df

def exact_area(ratios, max_tau):
    "The area under AlgoPerf's ρ, a step function, over [1, max_tau] ÷ (max_tau - 1): a ratio under 1 counts from τ = 1"
    return ratios.map(lambda r: max(max_tau - max(r, 1.), 0.)/(max_tau - 1)).mean(axis=1).to_dict()

def package(times:dict, **kw):
    "The package's scores and problems solved for the same times, through `results.csv`'s columns"
    res = pd.DataFrame([dict(problem=p, optimizer=o, steps_to_target=t) for o,d in times.items() for p,t in d.items()])
    s = performance_profile(res, **kw)[1].set_index('optimizer')
    return s.score.to_dict(), s.solved.to_dict(), s.area.to_dict()

def check_both_ways(times, **kw):
    "The package's scores equal AlgoPerf's; its `solved` is AlgoPerf's ρ(τ_max) times the number of problems"
    ours,solved,area = package(times, **kw)
    theirs,rho,ratios = algoperf(times, kw.get('tau_max', 4.), kw.get('reference'))
    exact,n = exact_area(ratios, kw.get('tau_max', 4.)),len(next(iter(times.values())))
    for o in times:
        assert ours[o] == pytest.approx(theirs[o], abs=1e-12), o
        assert solved[o] == round(rho[o]*n), o
        assert area[o] == pytest.approx(exact[o], abs=1e-12) and 0 <= area[o] <= 1, o
    return ours, solved

def test_a_problem_the_reference_never_solves_is_solved_by_whoever_solves_it():
    "AlgoPerf divides by ∞: a finite time is a ratio of 0, solved at every τ; ∞/∞ stays unsolved"
    times = dict(ref={'p': 10, 'q': None}, b={'p': 20, 'q': 30}, c={'p': 30, 'q': None})
    ours,solved = check_both_ways(times, reference='ref')
    assert solved == {'ref': 1, 'b': 2, 'c': 1}
    # the other reading (a problem the reference never solves is unsolved by all) gives b a lower score: the edge is hit
    other,*_ = package(dict(ref=times['ref'], b={'p': 20, 'q': None}, c=times['c']), reference='ref')
    assert ours['b'] > other['b'] + 0.4 and ours['c'] == other['c']

def test_tau_max_above_4_keeps_the_cut_at_4():
    "At τ_max 8 a time 6× the best is still unsolved (AlgoPerf cuts at 4× whatever max_tau is); 3× is solved"
    times = dict(a={'p': 10, 'q': 10}, b={'p': 60, 'q': 30}, c={'p': 30, 'q': 50})
    ours,solved = check_both_ways(times, tau_max=8.)
    assert solved == {'a': 2, 'b': 1, 'c': 1} and CUT == 4.
    cut_at_8 = {o: np.mean([max(8 - t/10, 0)/7 for t in d.values()]) for o,d in times.items()} # the other reading
    assert ours['b'] < cut_at_8['b'] - 0.1                      # it would count b's 6× on p
    assert check_both_ways(times, tau_max=2.)[1] == {'a': 2, 'b': 0, 'c': 0} # below 4 the profile's end is the cut

@pytest.mark.parametrize('reference', [None, 'b'])
def test_a_best_time_of_0_is_solved(reference):
    "A target met at initialisation (step 0): AlgoPerf's 0/0 keeps the 0, solved; any other time is over 4× of 0"
    times = dict(a={'p': 0, 'q': 5}, b={'p': 0, 'q': 10}, c={'p': 3, 'q': None})
    ours,solved = check_both_ways(times, reference=reference)
    assert solved == {'a': 2, 'b': 2, 'c': 0}
    if reference is None: assert ours['a'] == 1.             # the fastest on both problems

# ---- the protocols on hand-made traces (no training)

def tr(hit=None, loss=1.):
    return SimpleNamespace(hit=hit, hit_s=None if hit is None else hit/100, diverged=False, losses=[2., loss],
                           metrics=[2., loss], secs=1., steps=[0, 100])

def fake(monkeypatch, answer, every=2, **kw):
    "`bakeoff` with `run_trial` answering `answer(i)` for the i-th trial; the lrs it was asked for, in order"
    lrs = []
    def run_trial(pb, entry, lr, s, paths=False, hypers=None, schedule='constant', steps=None, dtype='fp32'):
        lrs.append(lr); return answer(len(lrs)-1)
    monkeypatch.setattr(bakeoff_module, 'run_trial', run_trial)
    pb = Problem('p', dls_fn=lambda: None, model_fn=lambda dls: None, lrs=(1e-3, 1e-1), steps=100, every=every)
    return bakeoff([pb], {'adam': Adam}, progress=False, file=io.StringIO(), protocol='algoperf', **kw), lrs

def test_a_median_on_a_half_step_is_kept(monkeypatch, tmp_path):
    "Evaluated every 5 steps, two studies whose best trials reach the target at 70 and 75: the problem's time is 72.5"
    hits = [None, 70, 80, 75, None, 90]
    res,_ = fake(monkeypatch, lambda i: tr(hits[i]), every=5, trials=3, studies=2)
    assert res.results.steps_to_target.tolist() == [72.5]
    assert res.trials.steps_to_target.dropna().tolist() == [70, 80, 75, 90]
    res.save(tmp_path)
    assert pd.read_csv(tmp_path/'results.csv').steps_to_target.tolist() == [72.5]
    assert '<td>72.5</td>' in (tmp_path/'index.html').read_text()
    assert '72.5' in res.results_table().to_string(index=False, float_format=lambda v: f"{v:.4g}") # as the command

def test_the_reported_setting_is_the_faster_middle_studys_best(monkeypatch):
    "Two studies: the time is the mean of both, the setting reported the best trial of the faster (the lower median)"
    hits = [None, 60, None, 30, None, None]                       # study 0's best: trial 1; study 1's best: trial 3
    res,lrs = fake(monkeypatch, lambda i: tr(hits[i]), trials=3, studies=2)
    assert res.results.steps_to_target.tolist() == [45] and res.results.lr.tolist() == [lrs[3]]
    hits = [None, 30, None, 60, None, None]
    res,lrs = fake(monkeypatch, lambda i: tr(hits[i]), trials=3, studies=2)
    assert res.results.lr.tolist() == [lrs[1]]

def test_a_study_that_never_reaches_the_target_reports_its_lowest_loss(monkeypatch):
    "No trial reaches it: the study's trial is the one with the lowest final loss, not its first"
    losses = [0.5, 0.1, 0.3]
    res,lrs = fake(monkeypatch, lambda i: tr(None, losses[i]), trials=3, studies=1)
    assert res.results.lr.tolist() == [lrs[1]] and res.results.final_loss.tolist() == [0.1]
    assert res.results.steps_to_target.isna().all()

# ---- a configuration's keywords

def test_each_optimizer_tunes_the_hyper_parameters_it_has():
    "Plain SGD (mom=0) is not tuned into momentum; a schedule-free optimizer tunes no warm-up it would never apply"
    def sp(o):
        e = BAKEOFF_OPTS[o] if isinstance(BAKEOFF_OPTS[o], OptEntry) else OptEntry(BAKEOFF_OPTS[o])
        return set(e.search_space((1e-3, 1e-1), 'warmup_cosine'))
    assert sp('sgd') == {'lr', 'wd', 'warmup'} and sp('momentum') == {'lr', 'one_minus_beta1', 'wd', 'warmup'}
    assert sp('adam') == {'lr', 'one_minus_beta1', 'one_minus_beta2', 'wd', 'warmup'}
    assert 'warmup' not in sp('schedulefree') and 'alpha' in sp('ademamix')

def test_one_minus_beta_becomes_beta():
    kw = opt_kwargs(dict(lr=0.1, warmup=0.05, one_minus_beta1=0.1, one_minus_beta2=0.001, wd=0.01, alpha=5.))
    assert kw == dict(mom=1-0.1, sqr_mom=1-0.001, wd=0.01, alpha=5.)

def test_a_trials_betas_reach_the_optimizer():
    "Tuning 1-β₁ = 0.1 and 1-β₂ = 0.001 trains as Adam(mom=0.9, sqr_mom=0.999), bit for bit; 1-β₁ = 0.5 does not"
    pb = BAKEOFF_PROBLEMS['rosenbrock']
    small = Problem('r', pb.dls_fn, pb.model_fn, pb.loss_func, pb.target, steps=20, lrs=pb.lrs, every=5)
    ws = lambda opt, **h: [w.tolist() for w in run_trial(small, opt, 1e-2, 3, paths=True, hypers=h).ws]
    tuned = ws(partial(Adam, mom=0.5, sqr_mom=0.5), one_minus_beta1=0.1, one_minus_beta2=0.001)
    assert tuned == ws(partial(Adam, mom=0.9, sqr_mom=0.999))
    assert tuned != ws(partial(Adam, mom=0.9, sqr_mom=0.999), one_minus_beta1=0.5)

# ---- the command's Dask address

def test_the_command_takes_the_scheduler_from_dask_scheduler_address(monkeypatch):
    "As Dask's clients: $DASK_SCHEDULER_ADDRESS when --scheduler is not given; --scheduler and --workers win over it"
    asked = []
    def fake_bakeoff(*a, workers=None, scheduler=None, **kw):
        asked.append((workers, scheduler)); raise ValueError('stop here')
    monkeypatch.setattr('sgd_callbacks.cli.bakeoff', fake_bakeoff)
    monkeypatch.setenv('DASK_SCHEDULER_ADDRESS', 'tcp://from-env:8786')
    for kw in (dict(), dict(scheduler='tcp://given:1'), dict(workers=2)):
        assert run_bakeoff(problems='line', opts='sgd', file=io.StringIO(), err=io.StringIO(), **kw) == 2
    monkeypatch.setenv('DASK_SCHEDULER_ADDRESS', '')
    assert run_bakeoff(problems='line', opts='sgd', file=io.StringIO(), err=io.StringIO()) == 2
    assert asked == [(None, 'tcp://from-env:8786'), (None, 'tcp://given:1'), (2, None), (None, None)]

def test_an_edge_warning_names_what_widens_that_range(monkeypatch):
    "--lr_min/--lr_max move the lr's range only: an edge of 1-β₂ or wd points to the optimizer's search space"
    edges = ["p adam: best lr=0.1 at the high end of 0.001..0.1",
             "p adam: best one_minus_beta2=0.09 at the high end of 0.001..0.1"]
    res = SimpleNamespace(results_table=lambda: pd.DataFrame(dict(problem=['p'])), failures=lambda: [],
                          edge_warnings=lambda: edges, summary=lambda: 'winners: p adam',
                          winners_line=lambda: 'winners: p adam', meta=dict(seconds=1.))
    monkeypatch.setattr('sgd_callbacks.cli.bakeoff', lambda *a, **kw: res)
    err = io.StringIO()
    assert run_bakeoff(problems='line', opts='adam', file=io.StringIO(), err=err) == 0
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and '--lr_min/--lr_max' in lines[0] and '--lr_min' not in lines[1]
    assert "the range is the optimizer's search space: an OptEntry's `space` widens it" in lines[1]

def test_the_lower_median_of_an_even_number_of_seeds():
    "DeepOBS-style: the lower of the two middle values, a miss counted as ∞ (one hit of two seeds is enough)"
    assert lower_median([40, 10, 30, 20]) == 20 and lower_median([None, 10]) == 10
    assert lower_median([None, 10, None]) == math.inf

def test_a_resumed_run_may_score_otherwise(tmp_path):
    "tau_max, time and reference change the scoring, not the trials: a resumed run with others reads every trial back"
    pb = BAKEOFF_PROBLEMS['line']
    line = Problem('line', pb.dls_fn, pb.model_fn, pb.loss_func, pb.target, steps=30, lrs=pb.lrs, every=3)
    kw = dict(opts=['sgd', 'adam'], trials=2, seeds=1, progress=False, file=io.StringIO(), store=tmp_path)
    a = bakeoff([line], **kw)
    b = bakeoff([line], resume=True, tau_max=3., time='seconds', reference='sgd', **kw)
    assert b.meta['stored'] == dict(loaded=6, written=0) and a.results.drop(columns='seconds_to_target').equals(
        b.results.drop(columns='seconds_to_target'))

def test_the_report_says_how_each_edge_is_scored(monkeypatch):
    "The header a reader sees (and index.html): the cut at 4× whatever τ_max, 0/0 solved, x/∞ = 0 against a ref"
    score = lambda res: res.header()[1]['score']
    res,_ = fake(monkeypatch, lambda i: tr(10), trials=1, studies=1, tau_max=8.)
    assert "over 4× the best: unsolved, whatever τ_max" in score(res) and "(AlgoPerf's 0/0)" in score(res)
    assert 'x/∞' not in score(res)                                 # no reference: no ratio to one
    res,_ = fake(monkeypatch, lambda i: tr(10), trials=1, studies=1, reference='adam')
    assert "where adam never reaches a target, any time that does counts as solved (AlgoPerf's x/∞ = 0)" in score(res)

def test_a_reference_not_run_is_refused_before_any_trial(monkeypatch):
    "A misspelt --reference is an error before training, not after every trial has run"
    with pytest.raises(ValueError, match="`reference` 'adamw' is not one of the optimizers run: adam"):
        fake(monkeypatch, lambda i: tr(10), trials=1, studies=1, reference='adamw')
    asked = []
    monkeypatch.setattr(bakeoff_module, 'run_trial', lambda *a, **kw: asked.append(a))
    err,out = io.StringIO(),io.StringIO()
    assert run_bakeoff(problems='line', opts='sgd', reference='adam', file=out, err=err) == 2
    assert '--reference' in err.getvalue() and asked == [] and '[1/' not in out.getvalue(), err.getvalue()

def test_tied_scores_keep_the_run_order():
    "Equal times: the scores and the profile list the optimizers in the order they were run, not by name"
    res = pd.DataFrame(dict(problem=list('ppqq'), optimizer=['sgd', 'adam']*2, steps_to_target=[10, 10, 20, 20]))
    prof,scores = performance_profile(res)
    assert scores.optimizer.tolist() == ['sgd', 'adam'] and list(dict.fromkeys(prof.optimizer)) == ['sgd', 'adam']
