"""[[probe]] blocks: measurements on finished runs (attention maps, shape bias, inference time)."""
