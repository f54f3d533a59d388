"""Running what is missing: which runs to do, in what order, on which slots, under the study lock."""
