"""A ``module:function`` reward whose module raises when it is imported (not a test module).

``tests/test_reliability.py`` asserts the one line ``--reward tests.broken_reward_module:f``
gives.
"""

raise RuntimeError("the reward server is down")
