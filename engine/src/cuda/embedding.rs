//! CUDA launchers for this op family (see kernels/cu/); filled in with the CUDA backend work.
