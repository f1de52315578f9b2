// Decode attention, chunk reductions in shared memory: see attention_decode.glsl.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "attention_decode.glsl"
