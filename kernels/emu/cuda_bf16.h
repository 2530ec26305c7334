// cuda_bf16.h for the emulator build: the bf16 types and conversions are in emu.h, which the
// build force-includes into every source; this file only satisfies `#include <cuda_bf16.h>`.
#pragma once
#include "emu.h"
