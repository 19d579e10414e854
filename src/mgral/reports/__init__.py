"""Reports: curves and tables of runs."""
