"The star-import surface of sgd_callbacks: `from fastai.basics import *` then `from sgd_callbacks.all import *`"
from .data import *
from .scratch import *
from .callback import *
from .fast import *
from .compare import *
from .plots import *
from .vision import *
