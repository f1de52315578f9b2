// matmul_gemv_qdot_sx.comp in workgroups of 512 or 1,024 threads for gate/up rounding the
// activation (QOUT): a round is WG / 256 blocks of down's x. See matmul_gemv_q.glsl.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_spirv_intrinsics : require
#define INT_DOT 1
#define X_SHARED 1
#define QOUT_WIDE 1
#define WG 256
#include "matmul_gemv_q.glsl"
