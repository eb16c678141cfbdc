"""narrator: render narration from a SQLite project with Kokoro-82M."""

__version__ = "0.1.0"
