"""The pipeline kinds: one table that says how each pipeline is built, trained and applied.

=========  =========  ========  ==========================  ==========================================
kind       trains 2D  3D stage  the final network reads     the final network
=========  =========  ========  ==========================  ==========================================
``2d``     yes        no        LR frames                   the 2D network
``3d``     no         yes       windows of bicubic (HR) or  the 3D network
                                LR frames (its input space)
``2d_3d``  yes        yes       windows of 2D outputs       the 3D network (on HR frames)
``joint``  yes        yes       windows of LR frames        2D on every frame, then 3D, trained end to end
``3d_2d``  yes        yes       windows of LR frames        3D refines the LR centre frame, then 2D
``2d_3d_`` yes        yes       windows of 2D outputs       2d_3d, then a generative model of its
``gen``                                                     residual (ensemble members; traingen)
=========  =========  ========  ==========================  ==========================================

The pipeline builder (:mod:`hpcvsr.pipeline.build`), training, inference, the data segments (halo
frames) and the reports consult this table; nothing else compares pipeline names.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpcvsr.errors import UserError


@dataclass(frozen=True)
class Kind:
    name: str
    trains_2d: bool  # a 2D stage is trained first
    has_3d: bool  # a 3D network over frame windows follows
    feeds: str  # what the 3D stage reads: 'sr2d' (2D outputs), 'lr' (LR windows) or 'input' (by the 3D model's input space)
    needs_space: str = ""  # the 3D model's required input space ('' any, 'hr', or 'lr_refiner' for a same-size LR refiner)
    composite: str = ""  # models.MODELS name of the composition ('' : the 3D network is the final network)
    generative: bool = False  # a generative model of the final network's residual follows (ensembles; hpcvsr.models.generative)

    def window(self, size: int) -> int:
        """Frames per sample of the final network."""
        return size if self.has_3d else 1

    def halo(self, size: int) -> int:
        """Frames each side a rank must hold beyond its own for its windows."""
        return self.window(size) // 2

    def source(self, input_space: str = "hr") -> str:
        """The buffer the final network reads: 'lr', 'bicubic' or 'sr2d'."""
        if not self.has_3d:
            return "lr"
        if self.feeds == "input":
            return "bicubic" if input_space == "hr" else "lr"
        return self.feeds

    @property
    def param_prefix(self) -> str:
        """Prefix of the 3D network's layer names inside the final network (for freeze / lr_mult)."""
        return "net3d." if self.composite else ""


STAGE_2D = "2d"  # the 2D stage's name in histories, checkpoints and tables: the network of the 2d pipeline
STAGE_GEN = "gen"  # the generative stage's name in histories and checkpoints

KINDS = {
    STAGE_2D: Kind(STAGE_2D, trains_2d=True, has_3d=False, feeds="lr"),
    "3d": Kind("3d", trains_2d=False, has_3d=True, feeds="input"),
    "2d_3d": Kind("2d_3d", trains_2d=True, has_3d=True, feeds="sr2d", needs_space="hr"),
    "joint": Kind("joint", trains_2d=True, has_3d=True, feeds="lr", needs_space="hr", composite="joint2d3d"),
    "2d_3d_gen": Kind("2d_3d_gen", trains_2d=True, has_3d=True, feeds="sr2d", needs_space="hr", generative=True),
    "3d_2d": Kind("3d_2d", trains_2d=True, has_3d=True, feeds="lr", needs_space="lr_refiner", composite="reverse3d2d"),
}


def kind(name: str) -> Kind:
    if name not in KINDS:
        raise UserError(f"unknown pipeline '{name}' (choose from {', '.join(KINDS)})")
    return KINDS[name]
