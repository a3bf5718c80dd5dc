"""The local status page (``web.listen``): ``page.StatusPage`` serves it, ``board.StatusBoard``
keeps what it shows."""
