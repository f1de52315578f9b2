// Decode attention (as attention_decode_sg.comp) with the o GEMV and the residual Add
// after it in the same grid (O_WORKERS): see attention_o.glsl.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_spirv_intrinsics : require
#extension GL_EXT_shader_atomic_float : require
#define SUBGROUP_CHUNK 1
#define O_WORKERS 1
#define WG 256
#define KPC 64
#include "attention_decode.glsl"
