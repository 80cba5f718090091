// cuda_fp16.h (EMULATION) — half precision is c10::Half here.
#pragma once
#include <c10/util/Half.h>
using __half = c10::Half;
