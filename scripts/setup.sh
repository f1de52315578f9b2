#!/usr/bin/env bash
# Installs every Debian package llmrt needs to build and test (Debian 12).
# The CUDA toolkit is not a Debian package: when nvcc is present (in PATH or
# /usr/local/cuda) the CUDA backend is built, otherwise it is left out.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  nlohmann-json3-dev libcli11-dev catch2
  libvulkan-dev glslc spirv-headers
  mesa-vulkan-drivers vulkan-validationlayers vulkan-tools
  libcpp-httplib-dev libssl-dev libpcre2-dev
  python3
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
