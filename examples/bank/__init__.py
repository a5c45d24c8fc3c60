"""Bank transfers serialized by cluster locks with fencing, and an audit of the total.

Run the load and the invariant check on a standalone node::

    python -m examples.bank.run --accounts 20 --transfers 2000 --threads 8

Or host it on a node and drive it with ``skymesh call``::

    skymesh node --standalone --service examples.bank.bank:Bank '{"a": 100, "b": 100}'
"""
