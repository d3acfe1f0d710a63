"""Signal-processing kernels (Numba, ``nogil``) and their small stateful wrappers."""
