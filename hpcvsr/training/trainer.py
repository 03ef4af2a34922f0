"""The training loop: one function, read top to bottom.

``fit`` trains one stage (a model and a :class:`~hpcvsr.training.patches.PatchTask`) with synchronised
gradients (DistributedDataParallel when several ranks), Adam, an optional schedule, early
stopping on the globally reduced validation MSE, and an atomic checkpoint of the whole state
after every epoch and whenever a stop signal arrives. A run directory holding a checkpoint
resumes where it stopped, mid-epoch included, and ends with the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import copy
import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from hpcvsr.dist import DistEnv, StopFlag
from hpcvsr.errors import UserError
from hpcvsr.io import checkpoint
from hpcvsr.models.conditioning import run
from hpcvsr.models.lowering import autocast
from hpcvsr.models.weights import check_layers, layer_names
from hpcvsr.pipeline.config import TrainConfig

log = logging.getLogger("hpcvsr")


class Preempted(Exception):
    """Raised on every rank after the stop checkpoint is written; the job exits 0 to requeue."""


def per_rank_batch(global_batch: int, world: int) -> int:
    """The per-rank batch. The global batch must divide evenly.

    >>> per_rank_batch(16, 4)
    4
    """
    if global_batch % world:
        raise UserError(f"global batch {global_batch} is not divisible by {world} ranks; set train*.batch_size to a multiple of {world}")
    return global_batch // world


def param_groups(model: torch.nn.Module, lr: float, freeze=(), lr_mult=None, what: str = "model") -> list[dict]:
    """Optimizer parameter groups honouring frozen layers and per-layer LR multipliers."""
    lr_mult = dict(lr_mult or {})
    check_layers(model, list(freeze), f"{what}.freeze")
    check_layers(model, list(lr_mult), f"{what}.lr_mult")
    groups: dict[float, list] = {}
    for layer in layer_names(model):
        module = model.get_submodule(layer)
        params = list(module.parameters(recurse=False))
        if layer in freeze:
            for p in params:
                p.requires_grad_(False)
            continue
        groups.setdefault(lr * lr_mult.get(layer, 1.0), []).extend(params)
    return [{"params": ps, "lr": g} for g, ps in groups.items()]


def make_scheduler(opt, kind: str, epochs: int):
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs), eta_min=0.0)
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.5)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)


def warm_up(opt, base_lr: list, step: int, steps: float) -> None:
    """Linear learning-rate warm-up: step ``step`` (counted from the start of training) runs at
    (step + 1) / ``steps`` of ``base_lr`` until ``steps``. A zero-initialised residual (a 3D stage's
    last layer, a conditioning or mixing head) otherwise takes full-size Adam steps while its
    gradients are still tiny and noisy, and knocks the pretrained start off before it learns.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> warm_up(opt, [1.0], 0, 4.0); opt.param_groups[0]["lr"]
    0.25
    """
    f = min(1.0, (step + 1) / steps)
    for g, lr in zip(opt.param_groups, base_lr):
        g["lr"] = lr * f


def masked_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the targets that are not NaN (missing values); 0 with a gradient if none are."""
    valid = ~torch.isnan(y)
    d = torch.where(valid, out - torch.nan_to_num(y), torch.zeros_like(out))
    return (d * d).sum() / valid.sum().clamp_min(1)


def gradient_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the finite differences along x and y (NaN targets do not count): a loss
    term that rewards the fine-scale gradients (high wavenumbers) an MSE-trained network smooths away."""
    dx = masked_mse(out[..., :, 1:] - out[..., :, :-1], y[..., :, 1:] - y[..., :, :-1])
    dy = masked_mse(out[..., 1:, :] - out[..., :-1, :], y[..., 1:, :] - y[..., :-1, :])
    return dx + dy


def train_step(model, opt, x, y, masked: bool = False, where=None, grad_weight: float = 0.0, precision: str = "fp32",
               loss_fn=None) -> torch.Tensor:
    """One optimisation step on a per-rank batch; returns the (local) loss, still on the device.

    ``masked``: targets are NaN where the data are missing, and those cells do not count.
    ``where``: the samples' places and times, for a conditioned model.
    ``grad_weight``: weight of the :func:`gradient_mse` term added to the MSE.
    ``precision``: 'bf16' runs the forward and backward under bf16 autocast (the loss in fp32).
    ``loss_fn(out, y)``: the task's own loss (the generative stage's fair CRPS) instead of the MSE.
    """
    opt.zero_grad(set_to_none=True)
    with autocast(y.device, precision):
        out = run(model, x, where)
    out = out.float()
    if loss_fn is not None:
        loss = loss_fn(out, y)
    else:
        loss = masked_mse(out, y) if masked else F.mse_loss(out, y)
    if grad_weight:
        loss = loss + grad_weight * gradient_mse(out, y)
    loss.backward()
    opt.step()
    return loss.detach()


def eta_seconds(steps_left: int, evals_left: int, step_seconds: float, eval_seconds: float) -> float:
    """Seconds until a stage ends: the training steps left at the measured seconds per step, plus
    one evaluation pass (validation and training metrics, the checkpoint) at the measured seconds
    per pass for every epoch end still ahead. A rate of steps alone (tqdm's) misses the passes and,
    right after one, counts its pause as one slow step: its estimate jumps to many times the truth.

    >>> eta_seconds(250, 3, step_seconds=0.1, eval_seconds=30.0)  # 25 s of steps, then 3 passes
    115.0
    """
    return steps_left * step_seconds + evals_left * eval_seconds


def evaluate(task, model, env: DistEnv, split: str, precision: str = "fp32") -> dict:
    """Globally reduced metrics of ``model`` on ``split`` (identical on every rank), at the
    ``precision`` the stage trains in (the metrics themselves are summed in float64)."""
    model.eval()
    with torch.no_grad():
        sums = task.evaluate(model, split, precision)
    model.train()
    total = env.all_reduce_sum(sums.sums.clone())
    return sums.summary(total)


def fit(task, model: torch.nn.Module, tcfg: TrainConfig, env: DistEnv, *, ckpt_path: str, stop: StopFlag,
        stage: str, config: dict, freeze=(), lr_mult=None, what: str = "model") -> list[dict]:
    """Train ``model`` on ``task``; returns the per-epoch history (epoch 0 = before training).

    Checkpoints store the model's own description (``model.spec``); ``what`` names
    the config section of ``freeze`` / ``lr_mult`` in error messages. ``patches_per_epoch`` is a
    multiple of the global batch (checked when the configuration is loaded). A task may bring its
    own loss (``task.loss(out, y)``) and the validation metric the best epoch is chosen by
    (``task.objective``, default the MSE).
    """
    objective, loss_fn = getattr(task, "objective", "mse"), getattr(task, "loss", None)
    b_local = per_rank_batch(tcfg.batch_size, env.world)
    steps = tcfg.patches_per_epoch // tcfg.batch_size
    opt = torch.optim.Adam(param_groups(model, tcfg.lr, freeze, lr_mult, what=what))
    sched = make_scheduler(opt, tcfg.schedule, tcfg.epochs)
    epoch, step0, history, best, bad = 0, 0, [], math.inf, 0
    best_state = None
    if checkpoint.training_exists(ckpt_path):
        state = checkpoint.load_training(ckpt_path)
        if state.get("stage") != stage:
            raise UserError(f"{ckpt_path}: checkpoint of stage '{state.get('stage')}', expected '{stage}'")
        model.load_state_dict(state["model"]["state_dict"])
        if state.get("done"):
            log.info("%s: finished earlier, loaded from %s", stage, ckpt_path)
            return state["history"]
        if state["step"] and state["world"] != env.world:
            raise UserError(f"{ckpt_path}: stopped mid-epoch with {state['world']} ranks; resume with {state['world']} ranks "
                            f"(checkpoints at epoch boundaries resume at any rank count)")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        epoch, step0, history = state["epoch"], state["step"], state["history"]
        best, bad, best_state = state["best"], state["bad_epochs"], state.get("best_state")
        checkpoint.set_rng_state(state["rng"])
        log.info("%s: resumed from %s at epoch %d step %d", stage, ckpt_path, epoch, step0)

    net = DDP(model) if env.distributed else model

    def save(next_epoch: int, next_step: int, done: bool = False) -> None:
        if env.is_root:
            checkpoint.save_training(ckpt_path, {
                "stage": stage, "model": checkpoint.model_entry(model), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": next_epoch, "step": next_step, "world": env.world, "history": history, "best": best,
                "bad_epochs": bad, "best_state": best_state, "rng": checkpoint.rng_state(), "config": config, "done": done,
            })
        env.barrier()

    eval_s = 0.0  # wall time of one evaluation pass: measured before the first epoch, unknown on a resume until the first epoch end
    if not history:
        t_eval = time.time()
        m0 = evaluate(task, model, env, "val", tcfg.precision)
        history.append({"epoch": 0, "val": m0, "train": evaluate(task, model, env, "train", tcfg.precision), "loss": None, "lr": tcfg.lr, "seconds": 0.0})
        best = m0[objective]
        best_state = copy.deepcopy(checkpoint.cpu_state(model))
        eval_s = time.time() - t_eval
    t_start = time.time()
    step_s, n_timed = 0.0, 0  # wall time and number of the training steps of this job
    bar = None
    if env.is_root:
        from tqdm import tqdm

        # the estimate of the time left is eta_seconds' in the postfix: tqdm's own counts steps only
        bar = tqdm(total=(tcfg.epochs - epoch) * steps - step0, desc=stage, unit="step", dynamic_ncols=True, leave=True,
                   bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
    timed_out = False
    while epoch < tcfg.epochs and not timed_out:
        rng = np.random.default_rng([tcfg.seed, epoch])  # the same stream on every rank
        origins = task.sample(rng, steps * b_local)
        loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
        t_epoch = time.time()
        base_lr = sched.get_last_lr()  # this epoch's rates; a warm-up scales them step by step
        with stop.polled():  # a signal in the step loop stops at the next step boundary, with a checkpoint
            for step in range(step0, steps):
                t_step = time.time()
                if tcfg.warmup:
                    warm_up(opt, base_lr, epoch * steps + step, tcfg.warmup * steps)
                x, y, where = task.batch(origins[step * b_local : (step + 1) * b_local])
                loss_sum += train_step(net, opt, x, y, masked=task.masked, where=where, grad_weight=tcfg.grad_weight,
                                       precision=tcfg.precision, loss_fn=loss_fn).double()
                flags = torch.tensor([float(stop.raised), float(bool(tcfg.max_minutes) and time.time() - t_start > 60 * tcfg.max_minutes)],
                                     device=env.device)
                flags = env.all_reduce_max(flags).tolist()  # one collective: every rank decides alike
                step_s, n_timed = step_s + time.time() - t_step, n_timed + 1
                if bar is not None:
                    left = eta_seconds((tcfg.epochs - epoch) * steps - step - 1, tcfg.epochs - epoch, step_s / n_timed, eval_s)
                    if tcfg.max_minutes:
                        left = min(left, 60 * tcfg.max_minutes - (time.time() - t_start) + eval_s)
                    done_frames = (step - step0 + 1) * tcfg.batch_size * task.frames_per_sample
                    bar.set_postfix_str(f"eta {tqdm.format_interval(max(0.0, left))}, epoch {epoch + 1}/{tcfg.epochs} "
                                        f"{done_frames / max(1e-9, time.time() - t_epoch):.0f} frames/s", refresh=False)
                    bar.update()
                if flags[0]:
                    save(epoch, step + 1)
                    log.info("%s: stop signal: checkpoint at epoch %d step %d written", stage, epoch, step + 1)
                    if bar is not None:
                        bar.close()
                    raise Preempted(stage)
                if flags[1]:
                    timed_out = True
                    log.info("%s: time limit of %.1f min reached in epoch %d", stage, tcfg.max_minutes, epoch + 1)
                    break
        n_steps = (step + 1 - step0) if steps > step0 else 0
        step0 = 0
        for g, lr in zip(opt.param_groups, base_lr):
            g["lr"] = lr  # the schedule continues from this epoch's rate
        sched.step()
        loss = float(env.all_reduce_sum(loss_sum.clone())) / max(1, n_steps * env.world)
        t_eval = time.time()
        val = evaluate(task, model, env, "val", tcfg.precision)
        history.append({"epoch": epoch + 1, "val": val, "train": evaluate(task, model, env, "train", tcfg.precision), "loss": loss,
                        "lr": opt.param_groups[0]["lr"], "seconds": time.time() - t_start})
        log.info("%s epoch %d: loss %.3e val mse %.3e psnr %.2f ssim %.4f", stage, epoch + 1, loss, val["mse"], val["psnr"], val["ssim"])
        if val[objective] < best:
            best, bad, best_state = val[objective], 0, copy.deepcopy(checkpoint.cpu_state(model))
        else:
            bad += 1
        epoch += 1
        save(epoch, 0)
        eval_s = time.time() - t_eval
        if tcfg.patience and bad >= tcfg.patience:
            log.info("%s: early stop after %d epochs without improvement", stage, bad)
            break
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)  # the best validation epoch (identical on every rank)
    save(epoch, 0, done=True)
    return history
