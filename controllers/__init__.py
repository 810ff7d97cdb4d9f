"""The 1Password operator built on the opsync framework: a drop-in replacement for 1Password's Go operator."""
