"""The step lab's views, one module per view; ``demo/tab_lab.py`` puts them in sub-tabs."""
