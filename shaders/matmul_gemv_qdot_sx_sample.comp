// The integer-dot decode GEMV with x's planes in shared memory (X_SHARED) that also
// samples a token from the row of logits it computes (SAMPLE: the head and the Sample
// after it in one dispatch): see matmul_gemv_q.glsl.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_spirv_intrinsics : require
#define INT_DOT 1
#define X_SHARED 1
#define SAMPLE 1
#define WG 256
#include "matmul_gemv_q.glsl"
