"""Runnable example services (``skymesh node --service examples.hello:Hello``)."""
