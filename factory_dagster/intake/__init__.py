"""Lead intake: read lead files from the inbox, validate them and quarantine the bad rows with reasons."""
