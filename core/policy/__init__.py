"""Learning to retrieve: the contextual bandit that sets a candidate quota per strategy.

allocation.py  quota levels, the feasible joint allocations under a candidate budget, their value
features.py    query and context features
history.py     per-query feedback statistics (a feature group)
models.py      Bayesian linear arms (one per allocation, or per strategy and quota level)
policies.py    Thompson sampling (default), LinUCB, epsilon-greedy and static baselines
"""
