"""The model on disk: where it is, what a folder holds, and how `narrator model pull` makes one."""
