// cuda_bf16.h (EMULATION) — bfloat16 is c10::BFloat16 here.
#pragma once
#include <c10/util/BFloat16.h>
using __nv_bfloat16 = c10::BFloat16;
