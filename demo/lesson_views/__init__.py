"""The lessons' live views (``demo/tab_lessons.py`` builds the tab around them)."""
