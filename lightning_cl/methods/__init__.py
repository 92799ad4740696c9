"""Continual-learning methods, one per file, and the kit they are written with.

A method is a :class:`~lightning_cl.methods.method.Method` (a Lightning callback that also
sees task boundaries). What it may rely on of the task data and of the module is declared in
:mod:`lightning_cl.methods.contract` and checked at setup. The kit: regularisers subclass
:class:`~lightning_cl.methods.quadratic_penalty.QuadraticPenalty`, methods with an episodic
memory :class:`~lightning_cl.methods.memory_method.MemoryMethod`, methods that keep updates off
a protected span :class:`~lightning_cl.methods.span_projection.SpanProjection`.
"""

from lightning_cl.methods.agem import AGEM
from lightning_cl.methods.der import DER, DERpp
from lightning_cl.methods.er import ExperienceReplay
from lightning_cl.methods.er_ace import ERACE
from lightning_cl.methods.er_reservoir import ReservoirER
from lightning_cl.methods.ewc import EWC, OnlineEWC
from lightning_cl.methods.gdumb import GDumb
from lightning_cl.methods.gem import GEM
from lightning_cl.methods.gpm import GPM
from lightning_cl.methods.icarl import ICaRL
from lightning_cl.methods.lwf import LwF
from lightning_cl.methods.mas import MAS
from lightning_cl.methods.method import Method
from lightning_cl.methods.ogd import OrthogonalGradientDescent
from lightning_cl.methods.si import SI

__all__ = ["AGEM", "DER", "ERACE", "EWC", "GDumb", "GEM", "GPM", "MAS", "SI", "DERpp", "ExperienceReplay", "ICaRL",
           "LwF", "Method", "OnlineEWC", "OrthogonalGradientDescent", "ReservoirER"]
