"""``python -m agents.convert``: the old name of the command ``python -m rlmix.convert``.

The command lives with the other commands (:mod:`rlmix.convert`); the agent layer imports none of
them, so this alias finds it only when run.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("rlmix.convert", run_name="__main__", alter_sys=True)
