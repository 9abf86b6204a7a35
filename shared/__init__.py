"""dustspot's shared library: configuration, storage, image I/O, tiling, inference, the pipeline."""
__version__ = "0.1.0"
