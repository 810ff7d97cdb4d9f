"""opsync: an asyncio controller framework, and a 1Password operator built on it."""

__version__ = "0.1.0"
