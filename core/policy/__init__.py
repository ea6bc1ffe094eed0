"""Learning to retrieve: the contextual bandit that sets a candidate quota per strategy.

allocation.py  quota levels, the feasible joint allocations under a candidate budget, their value
features.py    query and context features
models.py      Bayesian linear arms (one per strategy and quota level)
policies.py    Thompson sampling (default), LinUCB, epsilon-greedy and static baselines
"""
