"""The optimizers: fastai's rules by hand, the machinery that runs any rule in a `Learner`, and the modern rules"""
