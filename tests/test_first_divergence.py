"""The comparison's `first_divergence` on hand-made trajectories: the first step whose fingerprint differs, the first
parameter that differs there, and `first_dw`, the largest change of any weight at that step (not at a later one)."""
import math
import pytest, torch
from sgd_callbacks.all import *
# private names, in one place
from sgd_callbacks.weights import fingerprint

NAMES = ['a', 'b']                         # a: 2×2, b: 3 elements; flattened, a's four weights then b's three

def run(*steps):
    "A contender's record: per step the fingerprints of `a` and `b` and the flattened weights"
    ps = [(torch.tensor(s[:4]).view(2, 2), torch.tensor(s[4:])) for s in steps]
    return dict(prints=[fingerprint(p) for p in ps], ws=[torch.cat([a.flatten(), b]) for a,b in ps])

REF = run([1., 2., 3., 4., 5., 6., 7.], [1.5, 2., 3., 4., 5., 6., 7.], [2., 2., 3., 4., 5., 6., 7.], [3., 2., 3., 4., 5., 6., 7.])

def test_identical_runs_have_no_divergence():
    assert first_divergence(REF, run(*[w.tolist() for w in REF['ws']]), NAMES, None) is None

def test_a_change_in_a_later_element_of_a_later_parameter():
    "Step 2 differs in b's last two weights (by 0.25 and 2): b, and 2, the largest; step 3's larger change (9) is not it"
    other = run([1., 2., 3., 4., 5., 6., 7.], [1.5, 2., 3., 4., 5., 6., 7.], [2., 2., 3., 4., 5., 6.25, 9.], [3., 2., 3., 4., 5., 6., 16.])
    assert first_divergence(REF, other, NAMES, None) == (2, 'b', 2.)

def test_the_first_parameter_that_differs_and_the_largest_change_over_all():
    "Step 1: a's fourth weight off by 0.5, b's second by 3: the parameter is a (the first), the change 3 (the largest, b's)"
    other = run([1., 2., 3., 4., 5., 6., 7.], [1.5, 2., 3., 4.5, 5., 9., 7.], [2., 2., 3., 4., 5., 6., 7.], [3., 2., 3., 4., 5., 6., 7.])
    assert first_divergence(REF, other, NAMES, None) == (1, 'a', 3.)

def test_without_weights_the_change_is_nan():
    "`StepTrack(weights=False)`: fingerprints only"
    other = run([1., 2., 3., 4., 5., 6., 8.], *[w.tolist() for w in REF['ws'][1:]])
    step,name,dw = first_divergence(dict(REF, ws=None), dict(other, ws=None), NAMES, None)
    assert (step, name) == (0, 'b') and math.isnan(dw)
