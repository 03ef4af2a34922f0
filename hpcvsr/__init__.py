"""hpcvsr: distributed super-resolution of scientific simulation videos.

Two stages: a 2D network per frame (SRCNN / FSRCNN family, transfer-learned from the
authors' weights), then a 3D-convolution network over 5-frame windows.
"""

__version__ = "0.1.0"
