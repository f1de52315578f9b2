// The quantized decode GEMV with x as int8 planes and packed integer dot products
// (devices with VK_KHR_shader_integer_dot_product): see matmul_gemv_q.glsl.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_spirv_intrinsics : require
#define INT_DOT 1
#include "matmul_gemv_q.glsl"
