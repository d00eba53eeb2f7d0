"""Factory: an AI production line for outreach and content generation."""
