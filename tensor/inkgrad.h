// The tensor library in one include.
#pragma once

#include "tensor/autograd.h"
#include "tensor/dot.h"
#include "tensor/error.h"
#include "tensor/gradcheck.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"
#include "tensor/random.h"
#include "tensor/shape.h"
#include "tensor/tensor.h"
