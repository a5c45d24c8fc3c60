"""A TCP game lobby: clients connect through ``.gate``, log in, join rooms, chat.

Run a standalone node hosting it (binary port 7000, text port 7001)::

    skymesh node --standalone --service examples.lobby.server:Lobby 7000 7001

then ``python -m examples.lobby.client --port 7000 --nick ann --room hall hello``
or ``nc 127.0.0.1 7001`` and type ``login ann``, ``join hall``, ``say hi``.
"""
