"""Analysis of trained models: evaluation, ensembles, reports and their pictures."""
