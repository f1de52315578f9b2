// Gate/up with the SiLU product rounded (QOUT), then down and the residual Add in the
// same dispatch (FFN_DOWN), in groups of 16 threads with clustered sums (as
// matmul_gemv_qdot_sx16.comp). See matmul_gemv_q.glsl.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_clustered : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_spirv_intrinsics : require
#extension GL_EXT_shader_atomic_float : require
#define INT_DOT 1
#define X_SHARED 1
#define CLUSTER16 1
#define FFN_DOWN 1
#define WG 256
#include "matmul_gemv_q.glsl"
