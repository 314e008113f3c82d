"""The UI's screens, one module each; the app imports the run view lazily."""
