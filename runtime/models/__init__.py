"""Avatar backends behind one interface, and the factory that picks one."""
