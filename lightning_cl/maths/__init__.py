"""Pure tensor maths shared by the methods, no Lightning: passes over data (mean gradient,
per-example gradients, Fisher diagonal, layer inputs), gradient flattening and projection, and
spans of per-example gradients kept as layer factors. Each is tested on small tensors."""
