// The q/k/v integer-dot decode GEMV with the ropes and cache appends
// (matmul_gemv_qdot_rope.comp) in groups of 16 threads, two or more to a subgroup (sums
// by clustered subgroup adds). See matmul_gemv_q.glsl.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_clustered : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_spirv_intrinsics : require
#define INT_DOT 1
#define X_SHARED 1
#define ROPE_KV 1
#define CLUSTER16 1
#define WG 256
#include "matmul_gemv_q.glsl"
