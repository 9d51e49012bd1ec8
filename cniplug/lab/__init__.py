"""Teaching and seeing: the tutorial lab, the demo and `cniplug show`, apart from what a runtime execs."""
