"""A rain-like archive from a shallow-water run: intermittent (about 80 % zeros), heavy-tailed, non-negative.

    python jobs/rainlike.py SWE.nc RAIN.nc [--dry 0.8] [--seed 0]

Rain falls where the water column is highest: rain = a * max(0, h - q)^2 * texture, where q is the
``dry`` quantile of h over the whole run (so that fraction of cells is dry), and texture a
log-normal field, correlated over a few cells and new in every frame (convective cells the coarse
grid cannot hold and no model can predict). Written with xarray as CF NetCDF: precipitation_amount in
kg m-2 with valid_min 0, on the time and grid of the input.
"""

from __future__ import annotations

import argparse

import numpy as np
import xarray as xr
from scipy.ndimage import gaussian_filter


def rain_like(h: np.ndarray, *, dry: float = 0.8, seed: int = 0, texture: float = 0.8, cells: float = 1.5) -> np.ndarray:
    """(T, H, W) rain from (T, H, W) water heights, ``dry`` of the cells exactly 0."""
    q = np.quantile(h, dry)
    core = np.maximum(0.0, h - q) ** 2
    rng = np.random.default_rng(seed)
    g = np.stack([gaussian_filter(rng.standard_normal(h.shape[1:]), cells, mode="wrap") for _ in range(len(h))])
    g /= g.std()
    rain = core * np.exp(texture * g - texture**2 / 2)
    return (rain * (20.0 / np.quantile(rain[rain > 0], 0.99))).astype(np.float32)  # the wet 99th percentile at 20 kg m-2


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--dry", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    with xr.open_dataset(a.src) as ds:
        h = ds["h"]
        rain = xr.DataArray(rain_like(h.values, dry=a.dry, seed=a.seed), dims=h.dims, coords=h.coords, name="rain",
                            attrs={"units": "kg m-2", "standard_name": "precipitation_amount", "long_name": "rain-like field from h",
                                   "valid_min": np.float32(0.0)})
        out = rain.to_dataset()
        out.attrs = {"Conventions": "CF-1.8", "title": "rain-like field (intermittent, heavy-tailed) from a shallow-water run",
                     "source": f"jobs/rainlike.py {a.src} --dry {a.dry} --seed {a.seed}"}
        out.load()
    out.to_netcdf(a.dst, encoding={"rain": {"dtype": "float32", "_FillValue": np.float32(-999.0), "zlib": True}})
    r = out["rain"].values
    print(f"wrote {a.dst}: {r.shape}, {np.mean(r == 0):.1%} zeros, wet mean {r[r > 0].mean():.3g}, max {r.max():.3g} kg m-2")


if __name__ == "__main__":
    main()
