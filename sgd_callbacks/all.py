"""The star-import surface of sgd_callbacks: `from fastai.basics import *` (or `fastai.vision.all`, ...) then
`from sgd_callbacks.all import *`. It adds names and never rebinds one that fastai's `*.all` modules define: the
lesson's `mse` stays in `sgd_callbacks.scratch` (fastai's `mse` gives the same loss and gradients, bit for bit), and
argument checks and dataset classes stay in their modules."""
# shared machinery
from .events import OwnEvents # a Callback mixin: only the events a callback defines reach it
from .seeding import epoch_order, seed_epoch, EpochShuffle
from .loaders import SliceDL, tensor_dls
from .weights import same_weights, max_weight_diff
from .divergence import DivergedError
# the lesson and its Learner
from .data import LinearModel, linear_data, lstsq_weights, linear_dls, diabetes_dls
from .scratch import sgd_update, fit_scratch, plot_fit
from .callback import ScratchSGD, scratch_learner
from .plots import animate_fit, gif, plot_landscape, lesson_paths
from .vision import ImageDL, digits_dls, create_cnn, digits_resnet34, train_digits_resnet34
# optimizers
from .optim.fastai_rules import (rule_for, sgd_rule, rmsprop_rule, adam_rule, radam_rule, qhadam_rule, larc_rule,
                                 lamb_rule, lookahead_stage)
from .optim.step import ScratchStep, RuleError, lesson_rule, rule_opt, whole_step, RuleOptimizer
from .lowbit import bf16_sr, kahan_fold
from .optim.step import additive, lowbit_rule, optimi_adamw_rule # 16-bit weights: `kahan=True`, `stochastic_round=True`
from .optim.modern import schedulefree_sgd_rule, ScheduleFreeEval
from .optim.elementwise import cautious, directed # Cautious on any rule with a direction
from .optim.adam_mini import ParamNames # gives Adam-mini the parameters' names
from .optim.declare import OptDecl, RefSpec, DECLARATIONS # one declaration per optimizer
# every declared built-in's rule under its own name: a new optimizer joins the star import through its declaration
_RULES = {r.__name__: r for d in DECLARATIONS.values() if (r := getattr(d.rule, 'func', d.rule)) is not None}
globals().update(_RULES)
# comparison
from .compare import CONTENDERS, StepTrack, compare_optimizers, CompareResult, first_divergence
from .explain import Setup, explain_difference, Explanation, Cause, VOCAB, TorchSched # and `CompareResult.explain`
from .optim.torch_rules import torch_adam_rule
from .port import port, Port
# bake-off
from .bakeoff.problems import Problem, add_problem, BAKEOFF_PROBLEMS
from .bakeoff.run import bakeoff, BakeoffResult, OptEntry, own_rule, decl_entry, BAKEOFF_OPTS, DEFAULT_OPTS
from .bakeoff.run import performance_profile, run_trial
from .bakeoff.stats import bakeoff_stats # and `BakeoffResult.stats`
# the pictures and `save` of `BakeoffResult`, patched onto it
import sgd_callbacks.bakeoff.report # noqa: F401 (imported for its patches)
from .cli import run_bakeoff, run_explain
# scale and speed
from .fast import LeanLearner, LeanRecorder, fast_learner
from .distributed import ddp_env, DDPShard, RankFailed # and `Learner.ddp_ctx`

__all__ = ['OwnEvents', 'epoch_order', 'seed_epoch', 'EpochShuffle', 'SliceDL', 'tensor_dls', 'same_weights', 'max_weight_diff',
           'DivergedError',
           'LinearModel', 'linear_data', 'lstsq_weights', 'linear_dls', 'diabetes_dls', 'sgd_update', 'fit_scratch', 'plot_fit',
           'ScratchSGD', 'scratch_learner', 'animate_fit', 'gif', 'plot_landscape', 'lesson_paths',
           'ImageDL', 'digits_dls', 'create_cnn', 'digits_resnet34', 'train_digits_resnet34',
           'rule_for', 'sgd_rule', 'rmsprop_rule', 'adam_rule', 'radam_rule', 'qhadam_rule', 'larc_rule', 'lamb_rule',
           'lookahead_stage', 'ScratchStep', 'RuleError', 'lesson_rule', 'rule_opt', 'whole_step', 'RuleOptimizer',
           'bf16_sr', 'kahan_fold', 'additive', 'lowbit_rule', 'optimi_adamw_rule',
           'schedulefree_sgd_rule', 'ScheduleFreeEval', 
           'cautious', 'directed', 'ParamNames',
           'OptDecl', 'RefSpec', 'DECLARATIONS',
           'CONTENDERS', 'StepTrack', 'compare_optimizers', 'CompareResult', 'first_divergence',
           'Setup', 'explain_difference', 'Explanation', 'Cause', 'VOCAB', 'TorchSched', 'torch_adam_rule', 'port', 'Port',
           'Problem', 'add_problem', 'BAKEOFF_PROBLEMS', 'bakeoff', 'BakeoffResult', 'OptEntry', 'own_rule', 'decl_entry', 'BAKEOFF_OPTS',
           'DEFAULT_OPTS', 'performance_profile', 'run_trial', 'bakeoff_stats', 'run_bakeoff', 'run_explain',
           'LeanLearner', 'LeanRecorder', 'fast_learner', 'ddp_env', 'DDPShard', 'RankFailed']
__all__ += [n for n in _RULES if n not in __all__]
