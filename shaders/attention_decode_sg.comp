// Decode attention in workgroups of 256, chunks of 64 keys, chunk reductions by
// subgroup (devices with subgroup arithmetic): see attention_decode.glsl.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#define SUBGROUP_CHUNK 1
#define WG 256
#define KPC 64
#include "attention_decode.glsl"
