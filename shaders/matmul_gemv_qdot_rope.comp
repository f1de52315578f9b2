// The q/k/v integer-dot decode GEMV (x's planes in shared memory) with the rotary
// embedding of q and k and the cache appends of k and v in the same dispatch: see
// matmul_gemv_q.glsl.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_spirv_intrinsics : require
#define INT_DOT 1
#define X_SHARED 1
#define ROPE_KV 1
#define WG 256
#include "matmul_gemv_q.glsl"
