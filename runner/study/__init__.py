"""The study file: experiments.toml parsed and validated into a typed Study (spec, recipe, block specs)."""
