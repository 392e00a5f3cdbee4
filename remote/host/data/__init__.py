"""The bot's data: consistent snapshots of what shared_paths holds, restores that switch all of it in
one step, and the retention of what is kept (docs/architecture.md, "The bot's data")."""
