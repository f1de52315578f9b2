# Entry points: `make demo` (install, build, run a model) and `make test`
# (install, build, run the whole suite). BUILD_DIR and CMAKE_ARGS can be overridden.
BUILD_DIR ?= build
CMAKE_ARGS ?=
JOBS ?= $(shell nproc)
NVCC := $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
ifneq ($(NVCC),)
export CUDACXX ?= $(NVCC)
endif

.PHONY: all setup configure build test demo clean format

all: build

setup:
	./scripts/setup.sh

configure:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: setup
	$(MAKE) build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

demo: setup
	$(MAKE) build
	./scripts/demo.sh $(BUILD_DIR)

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD_DIR)
