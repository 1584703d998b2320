"""Alert rules, the evaluator that opens and resolves alerts, and their live feed."""
