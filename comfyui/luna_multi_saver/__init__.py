"""Luna Multi Saver: the node, its pure-Python luna-daemon client, shared-memory segments and the local save."""
