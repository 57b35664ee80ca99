"""Scoring candidates on an evaluation set: generation in batches, metrics, the judge, the forgetting
check, the comparison report."""
