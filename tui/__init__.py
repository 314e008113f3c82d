"""The Textual app and the CLI of runctl."""
