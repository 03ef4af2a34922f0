"""Every member of a constrained run degrades back to its input (the check of docs/ensembles.md).

    python jobs/check_members.py RUN FINE.nc VAR FRAMES

max |block_mean(member) - lr| / range, and the mass error, over the first FRAMES frames of FINE.nc, 16 members."""
import sys

import numpy as np
import torch
import xarray as xr

import hpcvsr
from hpcvsr.ops import degrade as dg

run, path, var, frames = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
hr = xr.open_dataset(path)[var].isel(time=slice(0, frames)).load()
sr = hpcvsr.load(run, device="cpu", members=16, seed=0)
lr = sr.degrade(hr)
ens = sr(lr).transpose("time", "realization", ...)  # (time, member, y, x)
s = sr.scale
back = dg.degrade(torch.from_numpy(ens.values.reshape(-1, 1, *ens.shape[-2:]).astype(np.float64)), s, "block_mean").numpy()
back = back.reshape(*ens.shape[:2], *lr.shape[-2:])
rng = float(hr.max() - hr.min())
err = np.abs(back - lr.values[:, None]).max() / rng
mass = np.abs(ens.values.astype(np.float64).sum((-2, -1)) - (lr.values.astype(np.float64).sum((-2, -1)) * s * s)[:, None]).max() / (
    np.abs(lr.values.astype(np.float64)).sum((-2, -1)) * s * s).max()
print(f"{run}: {ens.shape} members; max consistency error / range {err:.2e}; max mass error / total |mass| {mass:.2e}; min member value {float(ens.min()):.4g}")
