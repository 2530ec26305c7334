// swiglu.cu: kernels arrive with the CUDA backend work (issue 6).
#include "common.cuh"
