"""hpcvsr: distributed super-resolution of scientific simulation videos.

Two stages: a 2D network per frame (SRCNN / FSRCNN family, transfer-learned from the
authors' weights), then a 3D-convolution network over 5-frame windows.

The Python API (``docs/python.md``)::

    import hpcvsr, xarray as xr
    sr = hpcvsr.load("runs/quickstart")              # a finished run: a SuperResolver (an nn.Module)
    hr = xr.open_dataset("F.nc", chunks={"time": 24})["h"]
    out = sr(sr.degrade(hr))                          # lazy DataArray on the fine grid
    print(hpcvsr.metrics(out, hr))                    # the numbers hpcvsr infer --degrade prints
    rain = hpcvsr.open_archive("frames/*.nc")["rain"]  # many files as one lazy archive, in time order

    cfg = hpcvsr.load_config("quickstart", overrides=["train2d.epochs=2"])
    hpcvsr.train(cfg, "runs/mine")                    # what hpcvsr train does
"""

__version__ = "0.1.0"

# name: (module, attribute); imported on first use, so that `import hpcvsr` stays light
_API = {
    "load": ("hpcvsr.inference.resolver", "load"),
    "open_archive": ("hpcvsr.io.catalog", "open_archive"),
    "SuperResolver": ("hpcvsr.inference.resolver", "SuperResolver"),
    "metrics": ("hpcvsr.inference.resolver", "scores"),
    "train": ("hpcvsr.training.run", "train"),
    "load_config": ("hpcvsr.pipeline.build", "load_config"),
    "UserError": ("hpcvsr.errors", "UserError"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'hpcvsr' has no attribute '{name}'")
    import importlib

    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # a module-level name from now on
    return value


def __dir__():
    return sorted(__all__)
