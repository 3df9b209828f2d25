"""The star-import surface of sgd_callbacks: `from fastai.basics import *` (or `fastai.vision.all`, ...) then
`from sgd_callbacks.all import *`. It adds names and never rebinds one that fastai's `*.all` modules define: the
lesson's `mse` stays in `sgd_callbacks.scratch` (fastai's `mse` gives the same loss and gradients, bit for bit), and
argument checks and dataset classes stay in their modules."""
from .data import LinearModel, linear_data, lstsq_weights, epoch_order, SliceDL, seed_epoch, EpochShuffle, tensor_dls, linear_dls, diabetes_dls
from .scratch import sgd_update, fit_scratch, plot_fit
from .callback import DivergedError, ScratchSGD, scratch_learner, same_weights, max_weight_diff
from .rules import (ScratchStep, RuleError, rule_for, sgd_rule, rmsprop_rule, adam_rule, radam_rule, qhadam_rule,
                    larc_rule, lamb_rule, lookahead_stage, lesson_rule, rule_opt, whole_step, RuleOptimizer)
from .modern import lion_rule, schedulefree_adamw_rule, schedulefree_sgd_rule, ScheduleFreeEval, ademamix_rule
from .fast import LeanLearner, LeanRecorder, fast_learner
from .compare import CONTENDERS, StepTrack, compare_optimizers, CompareResult, first_divergence
from .plots import animate_fit, gif, plot_landscape, lesson_paths
from .vision import ImageDL, digits_dls, create_cnn, digits_resnet34, train_digits_resnet34
from .distributed import ddp_env, DDPShard, RankFailed # and `Learner.ddp_ctx`
from .muon_prodigy import muon_rule, prodigy_rule
from .problems import Problem, add_problem, BAKEOFF_PROBLEMS
from .bakeoff import bakeoff, BakeoffResult, OptEntry, own_rule, BAKEOFF_OPTS, performance_profile, run_trial
from .bakeoff_report import run_bakeoff # and the pictures and `save` of `BakeoffResult`
from .bakeoff import DEFAULT_OPTS

__all__ = ['LinearModel', 'linear_data', 'lstsq_weights', 'epoch_order', 'SliceDL', 'seed_epoch', 'EpochShuffle', 'tensor_dls',
           'linear_dls', 'diabetes_dls',
           'sgd_update', 'fit_scratch', 'plot_fit',
           'DivergedError', 'ScratchSGD', 'scratch_learner', 'same_weights', 'max_weight_diff',
           'ScratchStep', 'RuleError', 'rule_for', 'sgd_rule', 'rmsprop_rule', 'adam_rule', 'radam_rule', 'qhadam_rule',
           'larc_rule', 'lamb_rule', 'lookahead_stage', 'lesson_rule', 'rule_opt', 'whole_step', 'RuleOptimizer',
           'lion_rule', 'schedulefree_adamw_rule', 'schedulefree_sgd_rule', 'ScheduleFreeEval', 'ademamix_rule',
           'LeanLearner', 'LeanRecorder', 'fast_learner',
           'CONTENDERS', 'StepTrack', 'compare_optimizers', 'CompareResult', 'first_divergence',
           'animate_fit', 'gif', 'plot_landscape', 'lesson_paths',
           'ImageDL', 'digits_dls', 'create_cnn', 'digits_resnet34', 'train_digits_resnet34',
           'ddp_env', 'DDPShard', 'RankFailed',
           'muon_rule', 'prodigy_rule',
           'bakeoff', 'BakeoffResult', 'Problem', 'OptEntry', 'own_rule', 'add_problem', 'BAKEOFF_PROBLEMS', 'BAKEOFF_OPTS',
           'performance_profile', 'run_trial', 'run_bakeoff',
           'DEFAULT_OPTS']

from .data import OwnEvents # a Callback mixin: only the events a callback defines reach it
__all__ += ['OwnEvents']
