// Precompiled header: the torch headers the core uses, parsed once per target.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/functional.h>
#include <nlohmann/json.hpp>
